"""The LiteRT engine (ai-edge-litert, TensorFlow Lite's runtime) for ``graph_encoding: tflite``.

Used on the aarch64 board path. With ``execution_target: tpu`` the Coral Edge TPU delegate
(``libedgetpu.so.1``) is loaded; when it is missing (it ships only from Google's own package
repositories) the model runs on CPU and the log says so. A model compiled for the Edge TPU cannot
run without the delegate; its load error then says that too.

The delegate loading is not the Edge TPU running the model: only the operators that
``edgetpu_compiler`` replaced by its ``edgetpu-custom-op`` run there, the rest on LiteRT's CPU
kernels. So the log counts those operators in the model file (:func:`edgetpu_operators`): a float
model, or any model not compiled for the Edge TPU, runs wholly on the CPU whatever is loaded.

``ai-edge-litert`` is optional and imported lazily: without it, tflite models fail to load with a
message saying what to install, and nothing else is affected.

A LiteRT ``Interpreter`` is not thread-safe (``set_tensor``/``invoke``/``get_tensor`` share its
buffers), so each session has its own lock; sessions of other models still run in parallel.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flatbuffers
import numpy as np
from flatbuffers.table import Table

from mlcloud.errors import InferenceRuntimeError, InvalidModel
from mlcloud.inference.engines.base import Engine, Session, TensorSpec
from mlcloud.inference.metadata import ExecutionTarget

if TYPE_CHECKING:
    from mlcloud.inference.metadata import ModelMetadata

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"  # what edgetpu_compiler puts in place of what it maps


def _tables(table: Table, slot: int) -> list[Table]:
    """The tables of vector field ``slot`` (schema.fbs order) of a flatbuffer table."""
    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def edgetpu_operators(model: bytes) -> tuple[int, int]:
    """(operators that run on the Edge TPU, all operators) of a TFLite flatbuffer.

    Read with the generic flatbuffers runtime, by the TFLite schema's field slots (the ones
    mlcloud.modelbuild.tflite_models writes): Model.operator_codes is 1, Model.subgraphs 2,
    OperatorCode.custom_code 1, SubGraph.operators 3, Operator.opcode_index 0.
    """
    buf = bytearray(model)
    root = Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    edgetpu = set()
    for index, code in enumerate(_tables(root, 1)):
        custom = code.Offset(4 + 2 * 1)
        if custom and code.String(custom + code.Pos) == EDGETPU_CUSTOM_OP:
            edgetpu.add(index)
    on_tpu = total = 0
    for subgraph in _tables(root, 2):
        for operator in _tables(subgraph, 3):
            opcode = operator.Offset(4)
            index = operator.Get(flatbuffers.number_types.Uint32Flags, opcode + operator.Pos) if opcode else 0
            on_tpu += index in edgetpu
            total += 1
    return on_tpu, total


def _open_edgetpu_library() -> None:
    """dlopen libedgetpu.so.1 before LiteRT does: when it is missing, ai-edge-litert 2.1's
    load_delegate fails half-way and the half-made Delegate's __del__ prints a traceback."""
    ctypes.CDLL(EDGETPU_LIBRARY)


def _import_litert() -> tuple[Any, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError as exc:
        raise InvalidModel(
            "tflite models need the litert engine, which is not installed here "
            "(pip install 'mlcloud[litert]', PyPI ai-edge-litert)"
        ) from exc
    return Interpreter, load_delegate


class LiteRtSession(Session):
    engine = "litert"

    def __init__(self, interpreter: Any, *, delegate: str | None, device: str) -> None:
        self._inputs_detail = interpreter.get_input_details()
        self._outputs_detail = interpreter.get_output_details()
        super().__init__(
            [_spec(d) for d in self._inputs_detail],
            [_spec(d) for d in self._outputs_detail],
            error_kind=InferenceRuntimeError,
        )
        self._interpreter = interpreter
        self._lock = threading.Lock()
        self.delegate = delegate
        self.device = device  # "edgetpu" when some of its operators run there, else "cpu"

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        interpreter = self._interpreter
        with self._lock:
            resized = False
            current = {d["index"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
            for detail, array in zip(self._inputs_detail, arrays, strict=True):
                if current[detail["index"]] != array.shape:
                    # A new batch size: LiteRT needs the buffers reallocated before set_tensor.
                    interpreter.resize_tensor_input(detail["index"], list(array.shape))
                    resized = True
            if resized:
                interpreter.allocate_tensors()
            for detail, array in zip(self._inputs_detail, arrays, strict=True):
                interpreter.set_tensor(detail["index"], np.ascontiguousarray(array))
            interpreter.invoke()
            # get_tensor copies, so results survive the next invoke.
            return [interpreter.get_tensor(d["index"]) for d in self._outputs_detail]

    def unload(self) -> None:
        self._interpreter = None


class LiteRtEngine(Engine):
    name = "litert"

    def _load(self, path: Path, metadata: ModelMetadata) -> Session:
        interpreter_cls, load_delegate = _import_litert()
        delegates: list[Any] = []
        delegate_name = None
        if metadata.execution_target is ExecutionTarget.TPU:
            try:
                _open_edgetpu_library()
                delegates.append(load_delegate(EDGETPU_LIBRARY))
                delegate_name = EDGETPU_LIBRARY
            except Exception as exc:  # ValueError or OSError, depending on the release
                log.warning(
                    "Edge TPU delegate %s is not available (%s); running model %s on CPU",
                    EDGETPU_LIBRARY,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    metadata.model_name,
                )
        elif metadata.execution_target is ExecutionTarget.GPU:
            log.warning("model %s asks for gpu; the litert engine runs it on CPU", metadata.model_name)
        try:
            interpreter = interpreter_cls(
                model_path=str(path),
                experimental_delegates=delegates or None,
                num_threads=self.options.intra_op_threads,
            )
            interpreter.allocate_tensors()
        except Exception as exc:
            hint = ""
            if "edgetpu" in str(exc).lower() and delegate_name is None:
                hint = f" (the model is compiled for the Edge TPU and needs {EDGETPU_LIBRARY})"
            raise InvalidModel(f"litert could not load the model: {str(exc).strip()}{hint}") from exc
        device = "cpu"
        if delegate_name is not None:
            on_tpu, total = edgetpu_operators(path.read_bytes())
            if on_tpu:
                device = "edgetpu"
                log.info("model %s runs on the Edge TPU (%s): %d of its %d operators are %s, the other %d run on "
                         "the CPU", metadata.model_name, EDGETPU_LIBRARY, on_tpu, total,
                         EDGETPU_CUSTOM_OP.decode(), total - on_tpu)
            else:
                log.warning("model %s runs on the CPU although the Edge TPU delegate %s is loaded: it has no %s "
                            "(compile it with edgetpu_compiler, docs/deploy.md)", metadata.model_name,
                            EDGETPU_LIBRARY, EDGETPU_CUSTOM_OP.decode())
        return LiteRtSession(interpreter, delegate=delegate_name, device=device)


def _spec(detail: dict[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    return TensorSpec(str(detail.get("name") or detail["index"]), np.dtype(detail["dtype"]), shape)
