"""The default engine: onnxruntime on CPU (CUDA when asked for and present).

One ``InferenceSession`` per model, run concurrently from the registry's thread pool
(``InferenceSession.run`` is thread-safe). Idle onnxruntime threads spin by default; in a lattice
where NATS, the HTTP server and actors share the cores, that spinning costs ~30 % CPU per request
(PERFORMANCE-NOTES), so spinning is turned off for intra- and inter-op threads. Spinning only
within a run (``session.force_spinning_stop``) was measured too: ~2 ms less at concurrency 1, but
5–12 % less throughput at concurrency 16, where spinning threads take the cores from the other
processes (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


class OnnxRuntimeSession(Session):
    engine = "onnxruntime"

    def __init__(self, session: Any, *, error_kind: type[InferenceError] = OnnxError) -> None:
        super().__init__(
            [_spec(arg) for arg in session.get_inputs()],
            [_spec(arg) for arg in session.get_outputs()],
            error_kind=error_kind,
        )
        self._session = session
        self._input_names = [spec.name for spec in self.inputs]

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, dict(zip(self._input_names, arrays)))

    def unload(self) -> None:
        self._session = None


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
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if self.options.intra_op_threads:
            options.intra_op_num_threads = self.options.intra_op_threads
        if self.options.inter_op_threads:
            options.inter_op_num_threads = self.options.inter_op_threads
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        session = ort.InferenceSession(source, sess_options=options, providers=_providers(metadata))
        return OnnxRuntimeSession(session, error_kind=error_kind)


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
