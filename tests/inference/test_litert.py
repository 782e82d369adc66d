"""The LiteRT engine: absent package, Edge TPU delegate and its CPU fallback (a stand-in module,
since ai-edge-litert and libedgetpu are not installed here)."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcloud.errors import CorruptInputTensor, InvalidModel
from mlcloud.inference.engines import create_engine, litert
from mlcloud.inference.engines.litert import edgetpu_operators
from mlcloud.modelbuild import tflite_models

from .models import parsed


class FakeInterpreter:
    """Adds 3 to a float32 [N, 4] input, with LiteRT's detail dictionaries."""

    def __init__(self, model_path: str, experimental_delegates: Any = None, num_threads: Any = None) -> None:
        self.delegates = experimental_delegates
        self.shape = [1, 4]
        self.value: np.ndarray | None = None
        self.allocations = 0

    def allocate_tensors(self) -> None:
        self.allocations += 1

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"name": "x", "index": 0, "shape": np.array(self.shape), "shape_signature": np.array([-1, 4]),
                 "dtype": np.float32}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"name": "y", "index": 1, "shape": np.array(self.shape), "shape_signature": np.array([-1, 4]),
                 "dtype": np.float32}]

    def resize_tensor_input(self, index: int, shape: list[int]) -> None:
        self.shape = shape

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        if list(value.shape) != self.shape:
            raise ValueError("Cannot set tensor: Dimension mismatch")
        self.value = value

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> np.ndarray:
        assert self.value is not None
        return self.value + 3


def _install(monkeypatch: pytest.MonkeyPatch, *, delegate_ok: bool) -> list[str]:
    loaded: list[str] = []
    if delegate_ok:  # as if libedgetpu.so.1 were installed (it is not, here)
        monkeypatch.setattr(litert, "_open_edgetpu_library", lambda: None)

    def load_delegate(library: str) -> object:
        if not delegate_ok:
            raise ValueError(f"Failed to load delegate from {library}\n{library}: cannot open shared object file")
        loaded.append(library)
        return object()

    package = types.ModuleType("ai_edge_litert")
    interpreter = types.ModuleType("ai_edge_litert.interpreter")
    interpreter.Interpreter = FakeInterpreter  # type: ignore[attr-defined]
    interpreter.load_delegate = load_delegate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert", package)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", interpreter)
    return loaded


def test_litert_absent_is_a_clear_invalid_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    meta = parsed(encoding="tflite")
    with pytest.raises(InvalidModel, match="ai-edge-litert"):
        create_engine(meta).load(tmp_path / "m.tflite", meta)


def test_tpu_without_edgetpu_falls_back_to_cpu_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(monkeypatch, delegate_ok=False)
    meta = parsed(encoding="tflite", execution_target="tpu", dims=[-1, 4])
    with caplog.at_level(logging.WARNING):
        session = create_engine(meta).load(tmp_path / "m.tflite", meta)
    assert "libedgetpu.so.1 is not available" in caplog.text and "on CPU" in caplog.text
    assert session.delegate is None and session.device == "cpu"  # type: ignore[attr-defined]
    (y,) = session.predict([np.ones((3, 4), np.float32)])  # a new batch size resizes the input
    np.testing.assert_array_equal(y, np.full((3, 4), 4, np.float32))


def compiled_graph_bytes() -> bytes:
    """plus3 as edgetpu_compiler leaves a partly mapped model: an edgetpu-custom-op, then an ADD on CPU."""
    graph = tflite_models.TfliteGraph("edgetpu_compiler stand-in")
    x = graph.tensor("input", [1, 4])
    mapped = graph.tensor("mapped", [1, 4])
    three = graph.tensor("three", [1], np.array([3.0], dtype=np.float32))
    y = graph.tensor("output", [1, 4])
    graph.op(tflite_models.BUILTIN_CUSTOM, [x], [mapped], custom="edgetpu-custom-op")
    graph.op(tflite_models.BUILTIN_ADD, [mapped, three], [y])
    graph.inputs, graph.outputs = [x], [y]
    return graph.serialize()


def test_edgetpu_operators_are_counted_from_the_model_file() -> None:
    assert edgetpu_operators(tflite_models.plus3_graph().serialize()) == (0, 1)
    assert edgetpu_operators(compiled_graph_bytes()) == (1, 2)


def test_a_model_not_compiled_for_the_edge_tpu_runs_on_cpu_though_the_delegate_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = _install(monkeypatch, delegate_ok=True)
    meta = parsed(encoding="tflite", execution_target="tpu", dims=[-1, 4])
    with caplog.at_level(logging.INFO):
        session = create_engine(meta).load(tflite_models.build(tmp_path / "plus3.tflite"), meta)
    assert loaded == ["libedgetpu.so.1"] and session.delegate == "libedgetpu.so.1"  # type: ignore[attr-defined]
    assert session.device == "cpu"  # type: ignore[attr-defined]
    assert "runs on the CPU although the Edge TPU delegate libedgetpu.so.1 is loaded" in caplog.text
    assert "has no edgetpu-custom-op" in caplog.text and "on the Edge TPU (" not in caplog.text
    with pytest.raises(CorruptInputTensor):
        session.predict([np.ones((1, 4), np.float64)])


def test_a_compiled_model_runs_on_the_edge_tpu_and_the_log_says_which_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(monkeypatch, delegate_ok=True)
    model = tmp_path / "plus3_edgetpu.tflite"
    model.write_bytes(compiled_graph_bytes())
    meta = parsed(encoding="tflite", execution_target="tpu", dims=[-1, 4])
    with caplog.at_level(logging.INFO):
        session = create_engine(meta).load(model, meta)
    assert session.device == "edgetpu"  # type: ignore[attr-defined]
    assert "runs on the Edge TPU (libedgetpu.so.1): 1 of its 2 operators are edgetpu-custom-op, the other 1 run " \
        "on the CPU" in caplog.text
