"""Engines: onnxruntime and tract agree, every value type round-trips, errors convert at one boundary."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mlcloud.errors import CorruptInputTensor, InvalidModel, OnnxError
from mlcloud.inference.engines import create_engine, engine_name_for
from mlcloud.inference.engines.base import EngineOptions, engine_errors
from mlcloud.interfaces import Tensor, ValueType

from .models import onnx_model, parsed

ENGINES = ["onnxruntime", "tract"]


@pytest.mark.parametrize("engine", ENGINES)
def test_identity_and_add_agree_across_engines(tmp_path: Path, engine: str) -> None:
    add = onnx_model(tmp_path / "add.onnx", op="Add", constant=3.0)
    meta = parsed(dims=[-1, 4])
    session = create_engine(meta, engine).load(add, meta)
    x = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    (y,) = session.predict([x])
    np.testing.assert_array_equal(y, x + 3)
    assert session.engine == engine
    assert [s.name for s in session.inputs] == ["x"]
    assert session.input.shape == (None, 4) and session.input.batch_dim_symbolic


def test_onnxruntime_and_tract_give_the_same_numbers(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "sig.onnx", op="Sigmoid")
    meta = parsed(dims=[-1, 4])
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    a = create_engine(meta, "onnxruntime").load(path, meta).predict([x])[0]
    b = create_engine(meta, "tract").load(path, meta).predict([x])[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("value_type", list(ValueType))
def test_every_value_type_round_trips_as_itself(tmp_path: Path, engine: str, value_type: ValueType) -> None:
    dtype = value_type.dtype
    path = onnx_model(tmp_path / "id.onnx", dtype=dtype, shape=["N", 3])
    meta = parsed(dims=[-1, 3], tensor_type=value_type.value.removeprefix("Value"))
    session = create_engine(meta, engine).load(path, meta)
    x = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    request = Tensor.from_numpy(x)
    (y,) = session.predict([request.to_numpy()])
    answer = Tensor.from_numpy(y)
    assert answer.value_types == [value_type]
    assert answer.data == request.data and answer.dimensions == [2, 3]


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_dtype_or_shape_is_corrupt_input(identity_path: Path, engine: str) -> None:
    meta = parsed(dims=[-1, 4])
    session = create_engine(meta, engine).load(identity_path, meta)
    with pytest.raises(CorruptInputTensor, match="value type"):
        session.predict([np.ones((1, 4), np.float64)])
    with pytest.raises(CorruptInputTensor, match="dimensions"):
        session.predict([np.ones((1, 5), np.float32)])
    with pytest.raises(CorruptInputTensor, match="dimensions"):
        session.predict([np.ones((4,), np.float32)])


@pytest.mark.parametrize("engine", ENGINES)
def test_garbage_file_is_invalid_model_keeping_the_cause(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"this is not protobuf \x07\x07")
    meta = parsed()
    with pytest.raises(InvalidModel, match=engine) as info:
        create_engine(meta, engine).load(path, meta)
    assert info.value.__cause__ is not None
    assert "Stack backtrace" not in info.value.message


def test_metadata_contradicting_the_model_is_refused(identity_path: Path) -> None:
    meta = parsed(tensor_type="U8")
    with pytest.raises(InvalidModel, match="tensor_type"):
        create_engine(meta).load(identity_path, meta)
    meta = parsed(dims=[1, 5])
    with pytest.raises(InvalidModel, match="tensor_dimensions_in"):
        create_engine(meta).load(identity_path, meta)
    meta = parsed(input_name="pixels")
    with pytest.raises(InvalidModel, match="input_name"):
        create_engine(meta).load(identity_path, meta)


def test_engine_choice_override_then_metadata_then_default() -> None:
    assert engine_name_for(parsed()) == "onnxruntime"
    assert engine_name_for(parsed(engine="tract")) == "tract"
    assert engine_name_for(parsed(engine="tract"), "onnxruntime") == "onnxruntime"
    assert engine_name_for(parsed(encoding="tflite")) == "litert"
    with pytest.raises(InvalidModel, match="cannot run tflite"):
        engine_name_for(parsed(encoding="tflite"), "onnxruntime")
    with pytest.raises(InvalidModel, match="cannot run onnx"):
        engine_name_for(parsed(), "litert")


def test_tract_missing_is_a_clear_invalid_model(identity_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tract", None)  # what an aarch64 machine looks like
    meta = parsed()
    with pytest.raises(InvalidModel, match="tract engine is not installed"):
        create_engine(meta, "tract").load(identity_path, meta)


@pytest.mark.parametrize("engine", ENGINES)
def test_sessions_run_concurrently_from_threads(identity_path: Path, engine: str) -> None:
    meta = parsed(dims=[-1, 4])
    session = create_engine(meta, engine, EngineOptions(intra_op_threads=1)).load(identity_path, meta)
    errors: list[object] = []

    def work(k: int) -> None:
        for _ in range(50):
            x = np.full((k, 4), k, np.float32)
            (y,) = session.predict([x])
            if not np.array_equal(x, y):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_engine_errors_boundary_maps_kinds() -> None:
    class TractError(Exception):
        pass

    with pytest.raises(InvalidModel) as load:
        with engine_errors("x", "load"):
            raise RuntimeError("boom")
    assert isinstance(load.value.__cause__, RuntimeError)
    with pytest.raises(CorruptInputTensor):
        with engine_errors("tract", "predict", OnnxError):
            raise TractError("Input at index 0 has incorrect dtype or shape\n\nStack backtrace:\n 0: x")
    with pytest.raises(OnnxError, match="kaput$"):
        with engine_errors("tract", "predict", OnnxError):
            raise TractError("kaput\n\nStack backtrace:\n 0: anyhow")


def _two_outputs(path: Path) -> Path:
    import onnx
    from onnx import helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype("float32"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("Neg", ["x"], ["negated"])],
        "two",
        [helper.make_tensor_value_info("x", elem, ["N", 2])],
        [
            helper.make_tensor_value_info("same", elem, ["N", 2]),
            helper.make_tensor_value_info("negated", elem, ["N", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_metadata_output_name_becomes_output_zero(tmp_path: Path, engine: str) -> None:
    path = _two_outputs(tmp_path / "two.onnx")
    meta = parsed(dims=[-1, 2], output_name="negated")
    session = create_engine(meta, engine).load(path, meta)
    assert [s.name for s in session.outputs] == ["negated", "same"]
    first, second = session.predict([np.ones((1, 2), np.float32)])
    assert first.tolist() == [[-1, -1]] and second.tolist() == [[1, 1]]
    meta = parsed(dims=[-1, 2], output_name="logits")
    with pytest.raises(InvalidModel, match="output_name 'logits'"):
        create_engine(meta, engine).load(path, meta)


class _Recording:
    """A real onnxruntime session that counts its runs and holds each one until released."""

    def __init__(self, session: object, hold: threading.Event | None = None) -> None:
        self.session, self.hold, self.runs = session, hold, 0
        self.started = threading.Event()

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, *args):
        self.runs += 1
        self.started.set()
        if self.hold is not None:
            self.hold.wait(5)
        return self.session.run(*args)


needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the one-thread session needs 2 cores")


@needs_two_cores
def test_onnxruntime_runs_on_the_spinning_session_when_idle_and_the_one_thread_session_when_busy(
    tmp_path: Path,
) -> None:
    path = onnx_model(tmp_path / "add.onnx", op="Add", constant=1.0)
    meta = parsed(dims=[-1, 4])
    session = create_engine(meta, "onnxruntime").load(path, meta)
    idle, busy = session._session, session._busy_session
    assert busy is not None, "the default options give a second, one-thread session"
    release = threading.Event()
    session._session, session._busy_session = _Recording(idle, release), _Recording(busy)
    x = np.ones((1, 4), np.float32)
    first = threading.Thread(target=lambda: session.predict([x]))
    first.start()
    assert session._session.started.wait(5)
    (y,) = session.predict([x])  # while the first run is held: the busy session answers
    release.set()
    first.join(5)
    session.predict([x])  # idle again
    np.testing.assert_array_equal(y, x + 1)
    assert (session._session.runs, session._busy_session.runs) == (2, 1)


def test_onnxruntime_with_explicit_threads_opens_one_session(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "id.onnx")
    meta = parsed(dims=[-1, 4])
    session = create_engine(meta, "onnxruntime", EngineOptions(intra_op_threads=1)).load(path, meta)
    assert session._busy_session is None


@needs_two_cores
def test_onnxruntime_idle_means_no_run_of_any_model_and_warm_up_runs_both_sessions(tmp_path: Path) -> None:
    meta = parsed(dims=[-1, 4])
    engine = create_engine(meta, "onnxruntime")
    first = engine.load(onnx_model(tmp_path / "a.onnx", op="Add", constant=1.0), meta)
    second = engine.load(onnx_model(tmp_path / "b.onnx", op="Add", constant=2.0), meta)
    release = threading.Event()
    first._session = _Recording(first._session, release)
    second._session, second._busy_session = _Recording(second._session), _Recording(second._busy_session)
    x = np.ones((1, 4), np.float32)
    held = threading.Thread(target=lambda: first.predict([x]))
    held.start()
    assert first._session.started.wait(5)
    (y,) = second.predict([x])  # another model is running: the one-thread session answers
    release.set()
    held.join(5)
    np.testing.assert_array_equal(y, x + 2)
    assert (second._session.runs, second._busy_session.runs) == (0, 1)
    second.warm_up([x])
    assert (second._session.runs, second._busy_session.runs) == (1, 2)
