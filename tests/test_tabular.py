"""The tabular predict codec (``POST /{model}/predict``): rows in, the model's matrix out, every
refusal naming its field. The route itself runs against the real stack in tests/e2e/test_deployment.py."""

from __future__ import annotations

import pytest

from mlcloud.errors import InvalidModel, RequestError
from mlcloud.inference.metadata import ModelMetadata
from mlcloud.interfaces import ModelInfo, TensorInfo
from mlcloud.tabular import instances_tensor, output_index, wants_probabilities

NAMES = ["a", "b", "c"]
INFO = ModelInfo(name="t", bindle_id="t/1.0.0", inputs=[TensorInfo(name="input", shape=[-1, 3], datatype="ValueF32")],
                 outputs=[TensorInfo(name="label", shape=[-1], datatype="ValueS64"),
                          TensorInfo(name="probabilities", shape=[-1, 2], datatype="ValueF32")],
                 feature_names=NAMES)


def test_rows_as_lists_and_by_name_give_the_same_matrix_in_the_models_order():
    by_list = instances_tensor({"instances": [[1, 2, 3], [4, 5.5, 6]]}, INFO)
    by_name = instances_tensor({"instances": [{"c": 3, "a": 1, "b": 2}, {"b": 5.5, "a": 4, "c": 6}]}, INFO)
    assert by_list.to_numpy().tolist() == by_name.to_numpy().tolist() == [[1, 2, 3], [4, 5.5, 6]]
    assert by_list.to_numpy().dtype == "float32"


@pytest.mark.parametrize(("body", "message"), [
    ({}, "instances: expected"),
    ({"instances": []}, "instances: expected"),
    ({"instances": [[1, 2, 3], [1, 2]]}, "instances[1]: expected 3 features, got 2"),
    ({"instances": [[1, True, 3]]}, "instances[0][1]: True is not a number"),
    ({"instances": [[1, "2", 3]]}, "instances[0][1]: '2' is not a number"),
    ({"instances": [{"a": 1, "b": 2}]}, "instances[0].c: missing"),
    ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "instances[0].d: no such feature"),
    ({"instances": [{"a": 1, "b": [2], "c": 3}]}, "instances[0].b: [2] is not a number"),
    ({"instances": ["1,2,3"]}, "instances[0]: expected a list of numbers or an object"),
])
def test_a_bad_row_is_a_400_naming_the_field(body, message):
    with pytest.raises(RequestError) as refused:
        instances_tensor(body, INFO)
    assert refused.value.message.startswith(message) and refused.value.http_status == 400


def test_probabilities_are_asked_with_proba_and_refused_by_a_model_without_them():
    assert wants_probabilities("proba=1") and wants_probabilities("proba=true") and not wants_probabilities("")
    assert output_index(INFO, False) == 0 and output_index(INFO, True) == 1
    with pytest.raises(RequestError, match="gives no probabilities"):
        output_index(ModelInfo(name="r", bindle_id="r/1.0.0", outputs=INFO.outputs[:1]), True)


def test_feature_names_in_the_metadata_must_be_distinct_strings():
    base = {"model_name": "t", "graph_encoding": "onnx"}
    assert ModelMetadata.parse({**base, "feature_names": NAMES}).feature_names == tuple(NAMES)
    with pytest.raises(InvalidModel, match="feature_names"):
        ModelMetadata.parse({**base, "feature_names": ["a", "a"]})
