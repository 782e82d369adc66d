"""The default engine: onnxruntime on CPU (CUDA when asked for and present).

One model, two sessions, chosen per run by how busy the process is (unless ``intra_op_threads``
is set, which gives one session of that many threads that never spins):

* **idle**: no other onnxruntime run is in flight in the process, so the run gets every core,
  and its intra-op threads spin while the run lasts (``session.force_spinning_stop`` ends the
  spinning with the run). On the 2-core machines measured this is 6.3 ms against 8.7 ms a run
  without spinning, for less CPU;
* **busy**: another run (of any model) is in flight, so this one runs on its own thread (a
  session of one intra-op thread: no pool, nothing spins). Concurrent one-thread runs use the
  cores with the least CPU per image (10.7 ms against 12–14.6 ms), and idle spinning threads
  would take the cores from the preprocess actor, NATS and the HTTP server (PERFORMANCE-NOTES:
  ~30 % CPU per request when onnxruntime always spins).

The second session costs ~35 MB for EfficientNet-Lite0 (docs/performance.md); it is opened only
on CPU with more than one core. ``run`` is thread-safe in both, so the registry's thread pool
calls it concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcloud.errors import InferenceError, InvalidModel, OnnxError
from mlcloud.inference.engines.base import (
    ONNX_TYPE_STRINGS,
    Engine,
    Session,
    TensorSpec,
    engine_errors,
)
from mlcloud.inference.metadata import ExecutionTarget

if TYPE_CHECKING:
    import onnx

    from mlcloud.inference.metadata import ModelMetadata

log = logging.getLogger(__name__)


class _Runs:
    """How many onnxruntime runs are in flight in this process, over every model: the cores are
    shared by all of them, so "idle" means no other run anywhere."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def started(self) -> Iterator[int]:
        """Count a run for its duration; yields how many others were in flight when it began."""
        with self._lock:
            others = self._count
            self._count += 1
        try:
            yield others
        finally:
            with self._lock:
                self._count -= 1


_runs = _Runs()


class OnnxRuntimeSession(Session):
    engine = "onnxruntime"

    def __init__(self, session: Any, *, busy: Any = None, error_kind: type[InferenceError] = OnnxError) -> None:
        super().__init__(
            [_spec(arg) for arg in session.get_inputs()],
            [_spec(arg) for arg in session.get_outputs()],
            error_kind=error_kind,
        )
        self._session = session
        self._busy_session = busy  # used while another run is in flight (None: always _session)
        self._input_names = [spec.name for spec in self.inputs]

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = dict(zip(self._input_names, arrays, strict=True))
        with _runs.started() as others:
            session = self._busy_session if others and self._busy_session is not None else self._session
            outputs: list[np.ndarray] = session.run(None, feed)
            return outputs

    def warm_up(self, arrays: Sequence[np.ndarray]) -> None:
        super().warm_up(arrays)
        if self._busy_session is not None:
            with engine_errors(self.engine, "predict", self.error_kind), _runs.started():
                self._busy_session.run(None, dict(zip(self._input_names, arrays, strict=True)))

    def unload(self) -> None:
        self._session = self._busy_session = None


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def _load(self, path: Path, metadata: ModelMetadata) -> Session:
        return self._session(str(path), metadata, OnnxError)

    def load_proto(
        self, model: onnx.ModelProto, metadata: ModelMetadata, error_kind: type[InferenceError]
    ) -> Session:
        """Load an in-memory ONNX model (a converted TF1 graph); same errors as ``load``."""
        with engine_errors(self.name, "load"):
            return self._session(model.SerializeToString(), metadata, error_kind)

    def _session(
        self, source: str | bytes, metadata: ModelMetadata, error_kind: type[InferenceError]
    ) -> Session:
        providers = _providers(metadata)
        if self.options.intra_op_threads:
            session = self._open(source, providers, threads=self.options.intra_op_threads, spin=False)
            return OnnxRuntimeSession(session, error_kind=error_kind)
        idle = self._open(source, providers, threads=0, spin=True)
        # A one-thread session only helps where runs share CPU cores (not on a GPU, not on one core).
        on_cpu = providers == ["CPUExecutionProvider"]
        busy = self._open(source, providers, threads=1, spin=False) if on_cpu and _cores() > 1 else None
        return OnnxRuntimeSession(idle, busy=busy, error_kind=error_kind)

    def _open(self, source: str | bytes, providers: list[str], *, threads: int, spin: bool) -> Any:
        """One InferenceSession: ``threads`` intra-op threads (0: one per core), spinning only
        within a run when ``spin``, never otherwise."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if spin:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        if threads:
            options.intra_op_num_threads = threads
        if self.options.inter_op_threads:
            options.inter_op_num_threads = self.options.inter_op_threads
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        return ort.InferenceSession(source, sess_options=options, providers=providers)


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _providers(metadata: ModelMetadata) -> list[str]:
    import onnxruntime as ort

    if metadata.execution_target is ExecutionTarget.GPU:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning(
            "model %s asks for execution_target gpu but onnxruntime has no CUDA provider here; "
            "running it on CPU",
            metadata.model_name,
        )
    elif metadata.execution_target is ExecutionTarget.TPU:
        log.warning(
            "model %s asks for execution_target tpu, which onnxruntime cannot use (the Edge TPU "
            "runs tflite models on the litert engine); running it on CPU",
            metadata.model_name,
        )
    return ["CPUExecutionProvider"]


def _spec(arg: Any) -> TensorSpec:
    dtype = ONNX_TYPE_STRINGS.get(arg.type)
    if dtype is None:
        raise InvalidModel(f"tensor {arg.name!r} has type {arg.type}, which no tensor value type carries")
    # onnxruntime reports [] both for a scalar and for "no shape declared" (common in converted
    # graphs); treat it as unknown rank and let the runtime itself judge the input.
    shape = arg.shape or None
    dims = None if shape is None else tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
    return TensorSpec(arg.name, dtype, dims)
