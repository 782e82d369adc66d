"""plus3 (TF1 GraphDef), identity_model (ONNX) and synset.txt."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort

from mlcloud.modelbuild import identity, synset, tf1


def test_plus3_graph_def_parses_back():
    graph = tf1.parse(tf1.serialize())
    nodes = {n.name: n for n in graph.node}
    assert [n.name for n in graph.node] == ["input", "three", "output"]
    assert nodes["input"].op == "Placeholder"
    assert [d.size for d in nodes["input"].attr["shape"].shape.dim] == [1, 4]
    assert nodes["three"].op == "Const"
    value = nodes["three"].attr["value"].tensor
    assert list(value.float_val) == [3.0]
    assert [d.size for d in value.tensor_shape.dim] == [1]
    assert nodes["output"].op == "Add"
    assert list(nodes["output"].input) == ["input", "three"]
    from tensorboard.compat.proto import types_pb2

    assert nodes["input"].attr["dtype"].type == types_pb2.DT_FLOAT
    assert nodes["output"].attr["T"].type == types_pb2.DT_FLOAT


def test_plus3_bytes_are_reproducible(tmp_path):
    a = tf1.build(tmp_path / "a.pb").read_bytes()
    assert a == tf1.serialize()
    assert tf1.parse(a) == tf1.build_graph_def()


def test_identity_model_returns_its_input(tmp_path):
    path = identity.build(tmp_path / "identity_model.onnx")
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 13
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    x = np.array([[1.0, -2.5, 3.25, 1e30]], np.float32)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert y.tobytes() == x.tobytes()


def test_synset_is_byte_identical_to_the_model_zoo():
    data = synset.text()
    assert hashlib.sha256(data).hexdigest() == "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355"
    assert len(data) == 31_675
    labels = synset.labels()
    assert len(labels) == 1000
    assert labels[0] == "n01440764 tench, Tinca tinca"
    assert labels[281] == "n02123045 tabby, tabby cat"
    assert labels[285] == "n02124075 Egyptian cat"
    assert labels[967] == "n07920052 espresso"
