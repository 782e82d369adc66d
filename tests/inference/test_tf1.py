"""TF1 frozen GraphDefs converted to ONNX with tensorboard's protos, run on both ONNX engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import graph_pb2, types_pb2

from mlcloud.errors import InvalidModel, TensorflowError
from mlcloud.inference.engines import create_engine
from mlcloud.inference.engines.tf1 import graphdef_to_onnx

from .models import parsed, plus3_graphdef


@pytest.mark.parametrize("engine", ["onnxruntime", "tract"])
def test_plus3_adds_three_on_both_engines(plus3_path: Path, engine: str) -> None:
    meta = parsed(name="plus3", encoding="tensorflow")
    session = create_engine(meta, engine).load(plus3_path, meta)
    (y,) = session.predict([np.array([[1, 2, 3, 4]], np.float32)])
    np.testing.assert_array_equal(y, [[4, 5, 6, 7]])
    assert session.input.name == "input" and session.outputs[0].name == "output"
    # The placeholder has no shape; the metadata's [1, 4] fills it in.
    assert session.input.shape == (1, 4)


def test_unsupported_op_is_a_tensorflow_error_naming_it(tmp_path: Path) -> None:
    path = plus3_graphdef(tmp_path / "conv.pb", extra_op="Conv2D")
    meta = parsed(name="plus3", encoding="tensorflow")
    with pytest.raises(TensorflowError, match="'Conv2D'.*node 'output'"):
        create_engine(meta).load(path, meta)


def test_not_a_graphdef_is_a_tensorflow_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pb"
    path.write_bytes(b"\xff\xff\xff junk")
    with pytest.raises(TensorflowError):
        create_engine(parsed(encoding="tensorflow")).load(path, parsed(encoding="tensorflow"))


@pytest.mark.parametrize("engine", ["onnxruntime", "tract"])
def test_symbolic_batch_relu6_and_output_name(tmp_path: Path, engine: str) -> None:
    path = plus3_graphdef(tmp_path / "relu6.pb", extra_op="Relu6", shape=[-1, 4])
    meta = parsed(name="plus3", encoding="tensorflow", dims=[-1, 4], output_name="output:0")
    session = create_engine(meta, engine).load(path, meta)
    assert session.input.batch_dim_symbolic
    (y,) = session.predict([np.array([[1, 2, 3, 4], [-9, 0, 0, 0]], np.float32)])
    np.testing.assert_array_equal(y, [[4, 5, 6, 6], [0, 3, 3, 3]])


def _matmul_graph(path: Path) -> Path:
    graph = graph_pb2.GraphDef()
    x = graph.node.add(name="x", op="Placeholder")
    x.attr["dtype"].type = types_pb2.DT_FLOAT
    for size in (-1, 3):
        x.attr["shape"].shape.dim.add(size=size)
    w = graph.node.add(name="w", op="Const")
    w.attr["dtype"].type = types_pb2.DT_FLOAT
    tensor = w.attr["value"].tensor
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=3)
    tensor.tensor_content = np.arange(6, dtype="<f4").tobytes()
    mm = graph.node.add(name="mm", op="MatMul")
    mm.input.extend(["x", "w"])
    mm.attr["transpose_b"].b = True
    sm = graph.node.add(name="probs", op="Softmax")
    sm.input.append("mm")
    # Training leftovers that a frozen graph may still carry: not on the output's path.
    graph.node.add(name="save/RestoreV2", op="RestoreV2")
    path.write_bytes(graph.SerializeToString())
    return path


@pytest.mark.parametrize("engine", ["onnxruntime", "tract"])
def test_matmul_transpose_and_softmax(tmp_path: Path, engine: str) -> None:
    path = _matmul_graph(tmp_path / "mm.pb")
    meta = parsed(name="mm", encoding="tensorflow", dims=[-1, 3], output_name="probs")
    session = create_engine(meta, engine).load(path, meta)
    x = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    logits = x @ np.arange(6, dtype=np.float32).reshape(2, 3).T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(session.predict([x])[0], expected, rtol=1e-5)


def test_ambiguous_output_asks_for_output_name(tmp_path: Path) -> None:
    path = _matmul_graph(tmp_path / "mm.pb")
    graph = graph_pb2.GraphDef.FromString(path.read_bytes())
    extra = graph.node.add(name="other", op="Identity")
    extra.input.append("x")
    with pytest.raises(TensorflowError, match="output_name"):
        graphdef_to_onnx(graph.SerializeToString(), parsed(encoding="tensorflow", dims=[-1, 3]))


def test_tflite_engine_refused_for_tensorflow_graphs(plus3_path: Path) -> None:
    with pytest.raises(InvalidModel, match="cannot run tensorflow"):
        create_engine(parsed(encoding="tensorflow"), "litert")
