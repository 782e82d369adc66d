"""Model metadata JSON (DESIGN §5): parsed, validated, with errors naming the field."""

from __future__ import annotations

import json

import pytest

from mlcloud.errors import InvalidModel
from mlcloud.inference.metadata import ExecutionTarget, GraphEncoding, ModelMetadata
from mlcloud.interfaces import ValueType

ORIGINAL = {
    "model_name": "identity",
    "graph_encoding": "onnx",
    "execution_target": "cpu",
    "tensor_type": "F32",
    "tensor_dimensions_in": [1, 4],
    "tensor_dimensions_out": [1, 4],
}


def test_original_metadata_parses_from_bytes() -> None:
    meta = ModelMetadata.parse(json.dumps(ORIGINAL).encode())
    assert meta.model_name == "identity"
    assert meta.graph_encoding is GraphEncoding.ONNX
    assert meta.execution_target is ExecutionTarget.CPU
    assert meta.value_type is ValueType.ValueF32
    assert meta.tensor_dimensions_in == (1, 4)
    assert meta.engine is None and meta.input_name is None


def test_optional_fields_and_symbolic_dims() -> None:
    meta = ModelMetadata.parse(
        {**ORIGINAL, "engine": "Tract", "input_name": "x", "tensor_dimensions_in": [-1, 3, None],
         "tensor_type": "I64", "execution_target": "TPU", "future_field": 1}
    )
    assert meta.engine == "tract" and meta.input_name == "x"
    assert meta.tensor_dimensions_in == (None, 3, None)
    assert meta.value_type is ValueType.ValueS64
    assert meta.execution_target is ExecutionTarget.TPU


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"graph_encoding": "pytorch"}, "graph_encoding.*onnx | tensorflow | tflite"),
        ({"graph_encoding": None}, "lacks 'graph_encoding'"),
        ({"model_name": ""}, "model_name"),
        ({"tensor_type": "F128"}, "tensor_type"),
        ({"tensor_dimensions_in": [1, 0]}, "tensor_dimensions_in.*dimension 0"),
        ({"tensor_dimensions_in": "1,4"}, "must be a list"),
        ({"engine": "torch"}, "engine"),
        ({"execution_target": "fpga"}, "execution_target"),
    ],
)
def test_invalid_metadata_names_the_field(change: dict, message: str) -> None:
    data = {k: v for k, v in {**ORIGINAL, **change}.items() if v is not None}
    with pytest.raises(InvalidModel, match=message):
        ModelMetadata.parse(data)


def test_not_json_or_not_an_object() -> None:
    with pytest.raises(InvalidModel, match="not JSON"):
        ModelMetadata.parse(b"{nope")
    with pytest.raises(InvalidModel, match="JSON object"):
        ModelMetadata.parse(b"[1, 2]")
