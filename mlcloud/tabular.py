"""KServe v1's tabular predict, ``POST /{model}/predict``: rows of features in, predictions out.

    {"instances": [[5.1, 3.5, 1.4, 0.2], …]}                    rows as lists, in the model's order
    {"instances": [{"sepal_length": 5.1, …}, …]}                rows keyed by feature name (the names
                                                                 ``mlcloud.deploy`` recorded)
    → {"predictions": [0, …]}                                   the model's first output, one per row
    ?proba=1 → {"predictions": [[0.97, 0.03, 0.0], …]}          its ``probabilities`` output

A model qualifies when its first input is a matrix ``[rows, features]``. A wrong number of
features, an unknown or missing feature name, or a value that is not a number is a 400 whose
message names the field (``instances[2][3]``, ``instances[0].petal_width``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from mlcloud.errors import RequestError
from mlcloud.interfaces import ModelInfo, Tensor, ValueType

PROBABILITIES = "probabilities"  # skl2onnx's name for a classifier's class probabilities (ZipMap off)
_TRUE = {"1", "true", "yes", "on"}


def wants_probabilities(query_string: str) -> bool:
    values = parse_qs(query_string).get("proba") or [""]
    return values[-1].strip().lower() in _TRUE


def output_index(info: ModelInfo, probabilities: bool) -> int:
    """Which output answers: the first, or the one named ``probabilities``."""
    if not probabilities:
        return 0
    names = [o.name for o in info.outputs]
    if PROBABILITIES not in names:
        raise RequestError(f"model {info.name!r} gives no probabilities (its outputs: {', '.join(names)})")
    return names.index(PROBABILITIES)


def instances_tensor(body: dict[str, Any], info: ModelInfo) -> Tensor:
    """The ``instances`` of ``body`` as the model's input matrix."""
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RequestError('instances: expected {"instances": [[…], …]}, a non-empty list of rows')
    spec = info.inputs[0] if info.inputs else None
    if spec is None or spec.shape is None or len(spec.shape) != 2 or spec.datatype not in ValueType.__members__:
        raise RequestError(f"model {info.name!r} does not take rows of numbers "
                           f"(its input: {spec.shape if spec else None} {spec.datatype if spec else ''})")
    names = info.feature_names
    count = spec.shape[1] if spec.shape[1] > 0 else len(names) or None
    rows = [_row(i, instance, count, names) for i, instance in enumerate(instances)]
    if count is None and len({len(r) for r in rows}) > 1:
        raise RequestError(f"instances: rows of {sorted({len(r) for r in rows})} features; all must be alike")
    import numpy as np

    return Tensor.from_numpy(np.asarray(rows, dtype=ValueType(spec.datatype).dtype))


def _row(i: int, instance: Any, count: int | None, names: list[str]) -> list[float]:
    if isinstance(instance, dict):
        if not names:
            raise RequestError(f"instances[{i}]: this model records no feature names; send a list of numbers")
        unknown = [key for key in instance if key not in names]
        if unknown:
            raise RequestError(f"instances[{i}].{unknown[0]}: no such feature; the model's are {', '.join(names)}")
        missing = [name for name in names if name not in instance]
        if missing:
            raise RequestError(f"instances[{i}].{missing[0]}: missing")
        values = [(f"instances[{i}].{name}", instance[name]) for name in names]
    elif isinstance(instance, list):
        if count is not None and len(instance) != count:
            raise RequestError(f"instances[{i}]: expected {count} features, got {len(instance)}")
        values = [(f"instances[{i}][{j}]", value) for j, value in enumerate(instance)]
    else:
        raise RequestError(f"instances[{i}]: expected a list of numbers or an object keyed by feature name, "
                           f"got {type(instance).__name__}")
    for field, value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{field}: {value!r} is not a number")
    return [value for _, value in values]


def predictions(tensor: Tensor) -> list[Any]:
    """The answer tensor as one prediction per row."""
    answer: list[Any] = tensor.to_numpy().tolist()
    return answer
