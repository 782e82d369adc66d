"""mlcloud: a wasmCloud-style lattice of actors and capability providers for ML inference.

From a notebook: ``mlcloud.deploy(model, name, sample=X[:5])``, ``mlcloud.models()``,
``mlcloud.undeploy(name)``, and experiments between versions: ``mlcloud.split(name, {"1.0.0": 0.9,
"2.0.0": 0.1})`` or ``mlcloud.split(name, policy="thompson")`` (:mod:`mlcloud.deployment`,
imported on first use: actors import this package and need none of it).
"""

from typing import Any

__version__ = "0.1.0"

_DEPLOYMENT = ("deploy", "models", "undeploy", "split", "unsplit", "experiments", "Deployment", "DeployedModel")


def __getattr__(name: str) -> Any:
    if name in _DEPLOYMENT:
        from mlcloud import deployment

        return getattr(deployment, name)
    raise AttributeError(f"module 'mlcloud' has no attribute {name!r}")
