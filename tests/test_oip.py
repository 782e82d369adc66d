"""The Open Inference Protocol codec (mlcloud.oip): pure functions, checked against numpy and
against what tritonclient itself writes and reads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from mlcloud import oip
from mlcloud.errors import ContextNotFound, CorruptInputTensor, InvalidEncoding, ModelLoading, RequestError
from mlcloud.interfaces import Tensor, ValueType

EVERY_TYPE = [(vt, name) for vt, name in oip.DATATYPES.items()]


def request(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **fields}).encode()


@pytest.mark.parametrize("value_type, name", EVERY_TYPE, ids=[name for _, name in EVERY_TYPE])
def test_every_datatype_round_trips_through_json_and_binary(value_type: ValueType, name: str) -> None:
    values = np.arange(-3, 3) if name.startswith(("INT", "FP")) else np.arange(6)
    array = (values % 2 == 1 if name == "BOOL" else values).astype(value_type.dtype).reshape(2, 3)
    as_json = {"name": "x", "shape": [2, 3], "datatype": name, "data": array.tolist()}
    _, [from_json] = oip.parse_infer_request(request(as_json))
    assert from_json.tensor is not None
    np.testing.assert_array_equal(from_json.tensor.to_numpy(), array)

    header = request({"name": "x", "shape": [2, 3], "datatype": name,
                      "parameters": {"binary_data_size": array.nbytes}})
    _, [from_binary] = oip.parse_infer_request(header + array.tobytes(), str(len(header)))
    assert from_binary.tensor == from_json.tensor

    out = oip.tensor_output("y", from_json.tensor, binary=False)
    assert out.header == {"name": "y", "datatype": name, "shape": [2, 3], "data": array.reshape(-1).tolist()}
    out = oip.tensor_output("y", from_json.tensor, binary=True)
    assert out.header["parameters"] == {"binary_data_size": array.nbytes} and out.binary == array.tobytes()


def test_datatype_names_of_engine_tensor_infos() -> None:
    assert oip.datatype("ValueF32") == "FP32" and oip.datatype("ValueS64") == "INT64"
    assert oip.datatype("object") == "BYTES" and oip.datatype("bfloat16") == "BF16"


@pytest.mark.parametrize("item, error", [
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}, CorruptInputTensor),
    ({"name": "x", "shape": [1, -4], "datatype": "FP32", "data": []}, CorruptInputTensor),
    ({"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, 256]}, InvalidEncoding),
    ({"name": "x", "shape": [1], "datatype": "INT32", "data": ["one"]}, InvalidEncoding),
    ({"name": "x", "shape": [1], "datatype": "BF16", "data": [1.0]}, InvalidEncoding),
    ({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}, InvalidEncoding),
    ({"name": "x", "shape": [1], "datatype": "FP32"}, RequestError),
])
def test_a_json_input_that_does_not_fit_is_a_400(item: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        oip.parse_infer_request(request(item))
    assert getattr(caught.value, "http_status", 0) == 400


@pytest.mark.parametrize("body, length", [
    (b"{not json", None),
    (b'{"outputs": []}', None),
    (b'{"inputs": []}', None),
    (request({"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}), None),
    (b"{}", "ten"),
    (b"{}", "99"),
])
def test_a_malformed_request_is_a_400(body: bytes, length: str | None) -> None:
    with pytest.raises(RequestError):
        oip.parse_infer_request(body, length)


def test_binary_sizes_must_add_up() -> None:
    header = request({"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(RequestError, match="left over"):
        oip.parse_infer_request(header + bytes(12), str(len(header)))
    header = request({"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(CorruptInputTensor, match="needs 12 bytes"):
        oip.parse_infer_request(header + bytes(8), str(len(header)))


def test_json_and_binary_inputs_mix_in_input_order() -> None:
    header = request({"name": "a", "shape": [1], "datatype": "INT8", "data": [5]},
                     {"name": "b", "shape": [2], "datatype": "UINT16", "parameters": {"binary_data_size": 4}},
                     {"name": "c", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 16}})
    tail = np.array([7, 8], "<u2").tobytes() + oip.pack_bytes([b"cat", b"dog!!"])
    _, [a, b, c] = oip.parse_infer_request(header + tail, str(len(header)))
    assert a.tensor is not None and a.tensor.data == b"\x05"
    assert b.tensor is not None and list(b.tensor.to_numpy()) == [7, 8]
    assert c.elements == [b"cat", b"dog!!"]


def test_bytes_elements_as_tritonclient_packs_them() -> None:
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    elements = [b"", b"\xff\xd8 jpeg", "é".encode()]
    packed = serialize_byte_tensor(np.array(elements, dtype=np.object_)).item()
    assert oip.pack_bytes(elements) == packed and oip.unpack_bytes(packed) == elements
    assert list(deserialize_bytes_tensor(oip.pack_bytes(elements))) == elements
    with pytest.raises(CorruptInputTensor):
        oip.unpack_bytes(packed[:-1])


def test_the_response_is_json_or_json_then_binary_outputs_as_tritonclient_reads_it() -> None:
    from tritonclient.http import InferResult

    tensor = Tensor.from_numpy(np.array([[1.5, 2.5]], dtype=np.float32))
    body, header = oip.encode_response("m", "1.0.0", "r", [oip.tensor_output("y", tensor, binary=False)])
    assert header == {"content-type": "application/json"}
    assert json.loads(body) == {"model_name": "m", "model_version": "1.0.0", "id": "r",
                                "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]}

    outputs = [oip.tensor_output("y", tensor, binary=True), oip.bytes_output("z", [2], [b"a", b"bc"], binary=True)]
    body, header = oip.encode_response("m", "1.0.0", None, outputs)
    assert header["content-type"] == "application/octet-stream"
    result = InferResult.from_response_body(body, header_length=int(header[oip.HEADER_LENGTH]))
    np.testing.assert_array_equal(result.as_numpy("y"), tensor.to_numpy())
    assert list(result.as_numpy("z")) == [b"a", b"bc"]


def test_binary_output_follows_the_output_then_the_request() -> None:
    infer, _ = oip.parse_infer_request(request(
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
        parameters={"binary_data_output": True},
        outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}]))
    assert infer.outputs is not None
    assert [infer.binary_output(o) for o in infer.outputs] == [True, False] and infer.binary_output(None)


def test_classification_is_the_top_values_per_batch_row_with_labels_as_triton_writes_them() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [3.0, -1.0, 3.0]], dtype=np.float32)
    shape, classes = oip.classify(Tensor.from_numpy(scores), 2, ["zero", "one", "two"])
    assert shape == [2, 2]
    assert classes == [b"0.700000:1:one", b"0.200000:2:two", b"3.000000:0:zero", b"3.000000:2:two"]


def test_classification_without_matching_labels_and_of_integers_and_of_1001_classes() -> None:
    shape, classes = oip.classify(Tensor.from_numpy(np.array([4, 9, 1], dtype=np.int64)), 5, ["a", "b", "c", "d"])
    assert shape == [3] and classes == [b"9:1", b"4:0", b"1:2"]  # no batch dimension; k capped
    with_background = np.array([[0.5, 0.1, 0.4]], dtype=np.float32)
    _, classes = oip.classify(Tensor.from_numpy(with_background), 3, ["cat", "dog"])
    assert classes == [b"0.500000:0", b"0.400000:2:dog", b"0.100000:1:cat"]


def test_a_negative_classification_count_is_refused() -> None:
    with pytest.raises(RequestError):
        _ = oip.RequestOutput(name="y", parameters={"classification": -1}).classification


def test_batch_elements_join_along_the_first_dimension() -> None:
    one = Tensor.from_numpy(np.ones((1, 3), dtype=np.float32))
    two = oip.concat([one, one])
    assert two.dimensions == [2, 3] and two.data == one.data * 2
    with pytest.raises(CorruptInputTensor):
        oip.concat([one, Tensor.from_numpy(np.ones((1, 4), dtype=np.float32))])


def test_errors_are_a_string_with_the_status_and_headers_of_their_class() -> None:
    assert oip.error_reply(ContextNotFound("no model 'x'")) == (404, {}, {"error": "no model 'x'"})
    assert oip.error_reply(ModelLoading("loading")).headers == {"Retry-After": "1"}
    assert oip.is_oip_path("/v2") and oip.is_oip_path("//v2/models/m") and not oip.is_oip_path("/v2x/m")
    assert oip.version_of("efficientnet-lite0/1.0.0") == "1.0.0"
