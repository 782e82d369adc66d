"""mlcloud: a wasmCloud-style lattice of actors and capability providers for ML inference.

From a notebook: ``mlcloud.deploy(model, name, sample=X[:5])``, ``mlcloud.models()``,
``mlcloud.undeploy(name)``, and experiments between versions: ``mlcloud.split(name, {"1.0.0": 0.9,
"2.0.0": 0.1})`` or ``mlcloud.split(name, policy="thompson")`` (:mod:`mlcloud.deployment`);
``mlcloud.predict(name, rows_or_path)`` (:mod:`mlcloud.batch`); ``mlcloud.verify(answer.headers)``,
which checks which model answered (:mod:`mlcloud.verification`). Each is imported on first use:
actors import this package and need none of it.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# The notebook API: each name and the module that defines it, imported on first use.
_LAZY = {
    **dict.fromkeys(("deploy", "models", "undeploy", "split", "unsplit", "experiments", "Deployment",
                     "DeployedModel"), "mlcloud.deployment"),
    "predict": "mlcloud.batch",
    "verify": "mlcloud.verification",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlcloud' has no attribute {name!r}")
