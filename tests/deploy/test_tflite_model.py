"""plus3.tflite, the board path's model: a valid TFLite flatbuffer that LiteRT runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mlcloud.inference.engines import create_engine
from mlcloud.inference.metadata import ExecutionTarget, GraphEncoding, ModelMetadata
from mlcloud.modelbuild import bundles, tflite_models

from .conftest import PROJECT

SOURCE = PROJECT / "models" / "plus3-tflite" / "0.1.0"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tflite_models.build(tmp_path_factory.mktemp("tflite") / "plus3.tflite")


def test_generator_is_registered_and_the_source_says_tflite_on_tpu() -> None:
    assert "plus3.tflite" in bundles.generators()
    source = bundles.load_source(SOURCE)
    assert source.id == "plus3-tflite/0.1.0" and source.parcel_names() == ["plus3.tflite", "metadata.json"]
    meta = ModelMetadata.parse(json.loads((SOURCE / "metadata.json").read_text()))
    assert meta.graph_encoding is GraphEncoding.TFLITE and meta.execution_target is ExecutionTarget.TPU
    assert meta.engine is None  # litert is the tflite default; no override that would hit ONNX routes


def test_build_is_deterministic(model: Path, tmp_path: Path) -> None:
    again = tflite_models.build(tmp_path / "again.tflite")
    assert again.read_bytes() == model.read_bytes()
    assert model.read_bytes()[4:8] == b"TFL3"


def test_parses_back_with_the_tflite_schema(model: Path) -> None:
    tflite = pytest.importorskip("tflite", reason="PyPI tflite (the schema's generated code) is not installed")
    m = tflite.Model.GetRootAsModel(model.read_bytes(), 0)
    assert m.Version() == 3 and m.SubgraphsLength() == 1 and m.OperatorCodesLength() == 1
    assert m.OperatorCodes(0).BuiltinCode() == tflite.BuiltinOperator.ADD
    g = m.Subgraphs(0)
    tensors = {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}
    assert set(tensors) == {"input", "three", "output"}
    assert list(tensors["input"].ShapeSignatureAsNumpy()) == [-1, 4]
    assert all(t.Type() == tflite.TensorType.FLOAT32 for t in tensors.values())
    three = m.Buffers(tensors["three"].Buffer()).DataAsNumpy().view("<f4")
    assert list(three) == [3.0]
    op = g.Operators(0)
    assert op.BuiltinOptionsType() == tflite.BuiltinOptions.AddOptions
    assert [g.Tensors(i).Name() for i in op.InputsAsNumpy()] == [b"input", b"three"]
    assert [g.Tensors(g.Inputs(0)).Name(), g.Tensors(g.Outputs(0)).Name()] == [b"input", b"output"]


def test_mlcloud_litert_engine_runs_it_on_cpu_and_says_so(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'mlcloud[litert]')")
    meta = ModelMetadata.parse((SOURCE / "metadata.json").read_bytes())
    with caplog.at_level(logging.INFO):
        session = create_engine(meta).load(model, meta)
    # No libedgetpu.so.1 on this machine: the delegate is refused and LiteRT's CPU kernels run it.
    assert session.engine == "litert" and session.delegate is None  # type: ignore[attr-defined]
    assert "libedgetpu.so.1 is not available" in caplog.text and "plus3-tflite on CPU" in caplog.text
    (y,) = session.predict([np.array([[1, 2, 3, 4]], np.float32)])
    np.testing.assert_array_equal(y, [[4, 5, 6, 7]])
    (y,) = session.predict([np.zeros((3, 4), np.float32)])  # the batch dimension is symbolic
    np.testing.assert_array_equal(y, np.full((3, 4), 3, np.float32))
    assert "litert" in tflite_models.verify(model)
