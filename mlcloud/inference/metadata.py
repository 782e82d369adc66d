"""The model metadata parcel of a bindle (DESIGN §5), parsed and validated.

The original wasmCloud deployment's JSON, e.g.::

    {"model_name": "identity", "graph_encoding": "onnx", "execution_target": "cpu",
     "tensor_type": "F32", "tensor_dimensions_in": [1, 4], "tensor_dimensions_out": [1, 4]}

plus optional mlcloud fields: ``engine`` (onnxruntime | tract | litert), ``input_name`` (which
input of the graph the request tensor feeds; for TF1 graphs, which Placeholder) and
``output_name`` (TF1 graphs: the node whose value is the answer), ``preprocessing`` (an image
model's ``{"mean", "std", "divide_by", …}``: it then takes 8-bit pixels too, see
:mod:`mlcloud.inference.pixels`) and ``feature_names`` (a tabular model's input columns, in order,
as ``mlcloud.deploy`` records them: ``POST /{model}/predict`` takes rows keyed by them). A dimension of -1 or null is
symbolic (typically the batch size). Unknown fields are ignored so newer metadata still loads.
Every problem raises InvalidModel naming the field.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlcloud.errors import InvalidModel
from mlcloud.inference.pixels import PixelNormalization
from mlcloud.interfaces import ValueType

log = logging.getLogger(__name__)


class GraphEncoding(enum.StrEnum):
    ONNX = "onnx"
    TENSORFLOW = "tensorflow"
    TFLITE = "tflite"


class ExecutionTarget(enum.StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"


ENGINES = ("onnxruntime", "tract", "litert")

# The original metadata wrote "F32"; accept the spellings other tools use for the same types.
_TENSOR_TYPES: dict[str, ValueType] = {}
for _vt in ValueType:
    _short = _vt.value.removeprefix("Value")  # F32, S64, Bool
    for _alias in {_vt.value, _short, _short.replace("S", "I", 1) if _short[0] == "S" else _short}:
        _TENSOR_TYPES[_alias.upper()] = _vt
_TENSOR_TYPES.update(
    {
        "FP16": ValueType.ValueF16,
        "FP32": ValueType.ValueF32,
        "FP64": ValueType.ValueF64,
        "FLOAT16": ValueType.ValueF16,
        "FLOAT32": ValueType.ValueF32,
        "FLOAT64": ValueType.ValueF64,
        "UINT8": ValueType.ValueU8,
        "INT8": ValueType.ValueS8,
        "INT32": ValueType.ValueS32,
        "INT64": ValueType.ValueS64,
    }
)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    model_name: str
    graph_encoding: GraphEncoding
    execution_target: ExecutionTarget = ExecutionTarget.CPU
    value_type: ValueType | None = None
    tensor_dimensions_in: tuple[int | None, ...] | None = None
    tensor_dimensions_out: tuple[int | None, ...] | None = None
    engine: str | None = None
    input_name: str | None = None
    output_name: str | None = None
    pixel_normalization: PixelNormalization | None = None
    feature_names: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, data: ModelMetadata | Mapping[str, Any] | bytes | str) -> ModelMetadata:
        """Parse the metadata parcel (JSON bytes/text or an already decoded mapping)."""
        if isinstance(data, ModelMetadata):
            return data
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            try:
                data = json.loads(bytes(data) if not isinstance(data, str) else data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidModel(f"model metadata is not JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise InvalidModel(f"model metadata must be a JSON object, got {type(data).__name__}")
        return cls(
            model_name=_text(data, "model_name", required=True) or "",
            graph_encoding=_choice(data, "graph_encoding", GraphEncoding, required=True),
            execution_target=_choice(data, "execution_target", ExecutionTarget)
            or ExecutionTarget.CPU,
            value_type=_tensor_type(data.get("tensor_type")),
            tensor_dimensions_in=_dims(data, "tensor_dimensions_in"),
            tensor_dimensions_out=_dims(data, "tensor_dimensions_out"),
            engine=_engine(data.get("engine")),
            input_name=_text(data, "input_name"),
            output_name=_text(data, "output_name"),
            pixel_normalization=_pixel_normalization(data.get("preprocessing")),
            feature_names=_names(data, "feature_names"),
        )


def _pixel_normalization(value: Any) -> PixelNormalization | None:
    # Optional and only an optimisation: a block we cannot use costs the pixel input, not the model.
    try:
        return PixelNormalization.parse(value)
    except InvalidModel as exc:
        log.warning("%s; images for this model go as f32", exc.message)
        return None


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidModel(f"model metadata lacks {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidModel(f"model metadata {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(data: Mapping[str, Any], key: str, enum_type: Any, *, required: bool = False) -> Any:
    value = _text(data, key, required=required)
    if value is None:
        return None
    try:
        return enum_type(value.lower())
    except ValueError:
        allowed = " | ".join(member.value for member in enum_type)
        raise InvalidModel(f"model metadata {key!r} is {value!r}; expected {allowed}") from None


def _tensor_type(value: Any) -> ValueType | None:
    if value is None:
        return None
    found = _TENSOR_TYPES.get(str(value).strip().upper()) if isinstance(value, str) else None
    if found is None:
        raise InvalidModel(
            f"model metadata 'tensor_type' {value!r} is not a tensor type (F16, F32, F64, U8, "
            "U16, U32, U64, I8, I16, I32, I64, Bool)"
        )
    return found


def _dims(data: Mapping[str, Any], key: str) -> tuple[int | None, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidModel(f"model metadata {key!r} must be a list of dimensions, got {value!r}")
    dims: list[int | None] = []
    for dim in value:
        if dim is None or dim == -1:
            dims.append(None)
        elif isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
            dims.append(dim)
        else:
            raise InvalidModel(
                f"model metadata {key!r} has dimension {dim!r}; use a positive integer, "
                "or -1 / null for a symbolic one"
            )
    return tuple(dims)


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise InvalidModel(f"model metadata {key!r} must be a list of distinct non-empty strings, got {value!r}")
    return tuple(value)


def _engine(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in ENGINES:
        raise InvalidModel(f"model metadata 'engine' is {value!r}; expected {' | '.join(ENGINES)}")
    return value.strip().lower()
