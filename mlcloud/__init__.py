"""mlcloud: a wasmCloud-style lattice of actors and capability providers for ML inference.

From a notebook: ``mlcloud.deploy(model, name, sample=X[:5])``, ``mlcloud.models()`` and
``mlcloud.undeploy(name)`` (:mod:`mlcloud.deployment`), ``mlcloud.predict(name, rows_or_path)``
(:mod:`mlcloud.batch`) and ``mlcloud.verify(answer.headers)``, which checks which model answered
(:mod:`mlcloud.verification`), each imported on first use: actors import this package and need none of it.
"""

from typing import Any

__version__ = "0.1.0"

_DEPLOYMENT = ("deploy", "models", "undeploy", "Deployment", "DeployedModel")


def __getattr__(name: str) -> Any:
    if name in _DEPLOYMENT:
        from mlcloud import deployment

        return getattr(deployment, name)
    if name == "predict":
        from mlcloud.batch import predict

        return predict
    if name == "verify":
        from mlcloud.verification import verify

        return verify
    raise AttributeError(f"module 'mlcloud' has no attribute {name!r}")
