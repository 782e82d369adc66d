"""The engine contract of the mlinference provider, and the one place engine errors are converted.

An :class:`Engine` turns a model file plus its :class:`~mlcloud.inference.metadata.ModelMetadata`
into a :class:`Session`; a session knows its inputs and outputs (:class:`TensorSpec`: name, shape,
dtype) and maps numpy arrays to numpy arrays. Sessions are thread-safe: the registry calls
:meth:`Session.predict` from several threads at once and holds no lock around it (an engine whose
runtime is not thread-safe, like LiteRT's interpreter, locks per session, never globally).

Errors raised by onnxruntime, tract, protobuf or LiteRT never leave an engine as themselves:
:func:`engine_errors` wraps :meth:`Engine.load` and :meth:`Session.predict` and turns them into the
``InferenceError`` kinds of the mlinference contract, keeping the original as ``__cause__``:

    phase    foreign error                                   becomes
    load     anything (bad file, unsupported op, missing     InvalidModel (an InferenceError
             package)                                        raised on purpose passes unchanged)
    predict  onnxruntime InvalidArgument, tract dtype/shape  CorruptInputTensor
             clash, LiteRT ValueError
    predict  any other engine error                          the session's ``error_kind``
                                                             (OnnxError for ONNX graphs,
                                                             TensorflowError for converted TF1
                                                             graphs, InferenceRuntimeError else)
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mlcloud.errors import (
    CorruptInputTensor,
    InferenceError,
    InferenceRuntimeError,
    InvalidModel,
    OnnxError,
)
from mlcloud.interfaces import TensorInfo, ValueType

if TYPE_CHECKING:
    from mlcloud.inference.metadata import ModelMetadata

log = logging.getLogger(__name__)

Shape = tuple[int | None, ...]
"""A declared shape: an int is a fixed dimension, None a symbolic one (batch size, …)."""

_MAX_MESSAGE = 600


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Knobs shared by the engines; None leaves the engine's own default."""

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One declared input or output of a loaded model. ``shape`` None means unknown rank."""

    name: str
    dtype: np.dtype
    shape: Shape | None

    @property
    def value_type(self) -> ValueType | None:
        try:
            return ValueType.from_dtype(self.dtype)
        except InferenceError:
            return None

    @property
    def batch_dim_symbolic(self) -> bool:
        """True when dimension 0 may vary, so requests can be stacked along it."""
        return self.shape is not None and len(self.shape) > 0 and self.shape[0] is None

    def describe(self) -> str:
        kind = self.value_type or self.dtype
        dims = "?" if self.shape is None else ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} {kind} [{dims}]"

    def check(self, array: np.ndarray, *, dtype: np.dtype | None = None) -> None:
        """Raise CorruptInputTensor unless ``array`` has this spec's dtype (or ``dtype``) and a
        fitting shape.

        Value types are carried as themselves: an f64 tensor for an f32 input is refused, never
        cast, so a client bug shows instead of silently changing numbers. (8-bit pixels for a model
        that declares its normalisation are the one exception, checked with ``dtype``: they are
        normalised, not cast; see :mod:`mlcloud.inference.pixels`.)
        """
        problem = None
        if array.dtype != (self.dtype if dtype is None else dtype):
            problem = "value type"
        elif self.shape is not None:
            if array.ndim != len(self.shape) or any(
                want is not None and want != got for want, got in zip(self.shape, array.shape, strict=True)
            ):
                problem = "dimensions"
        if problem:
            try:
                got = str(ValueType.from_dtype(array.dtype))
            except InferenceError:
                got = str(array.dtype)
            raise CorruptInputTensor(
                f"wrong {problem}: the model expects input {self.describe()}, "
                f"got {got} {list(array.shape)}"
            )

    def to_info(self) -> TensorInfo:
        """What the api actor and washboard show of it (``GET /models/{m}``)."""
        return TensorInfo(
            name=self.name,
            shape=None if self.shape is None else [-1 if d is None else d for d in self.shape],
            datatype=str(self.value_type or self.dtype),
        )


class Session(ABC):
    """A loaded model. ``predict`` is thread-safe; ``unload`` is called once nothing uses it."""

    engine: ClassVar[str] = ""

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        error_kind: type[InferenceError] = OnnxError,
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.error_kind = error_kind
        self._output_order: list[int] | None = None  # set by select_output

    @property
    def input(self) -> TensorSpec:
        """The input the mlinference contract feeds (it carries one tensor per request)."""
        return self.inputs[0]

    def check_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        if len(arrays) != len(self.inputs):
            raise CorruptInputTensor(f"the model takes {len(self.inputs)} inputs, got {len(arrays)}")
        for spec, array in zip(self.inputs, arrays, strict=True):
            spec.check(array)

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model on one array per input, in ``inputs`` order; one array per output."""
        self.check_inputs(arrays)
        with engine_errors(self.engine, "predict", self.error_kind):
            results = self._run(arrays)
        if self._output_order is not None:
            results = [results[i] for i in self._output_order]
        return results

    def warm_up(self, arrays: Sequence[np.ndarray]) -> None:
        """One run on ``arrays`` so the first request does not pay for allocation and kernel
        setup (an engine with several runtimes for one model warms each)."""
        self.predict(arrays)

    @abstractmethod
    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def unload(self) -> None:
        """Release the runtime's resources (every engine holds some: drop them, or close them)."""


class Engine(ABC):
    """Loads model files of the graph encodings it supports into sessions."""

    name: str = ""  # set by each engine class; a front end (TF1) reports the runtime behind it

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

    def load(self, path: Path, metadata: ModelMetadata) -> Session:
        """Load ``path``; raise InvalidModel (or another InferenceError kind) saying why not."""
        with engine_errors(self.name, "load"):
            session = self._load(Path(path), metadata)
        select_input(session, metadata)
        select_output(session, metadata)
        check_against_metadata(session, metadata)
        return session

    @abstractmethod
    def _load(self, path: Path, metadata: ModelMetadata) -> Session: ...


def select_input(session: Session, metadata: ModelMetadata) -> None:
    """Make the fed input ``session.inputs[0]``; refuse models the contract cannot feed."""
    names = [spec.name for spec in session.inputs]
    if not names:
        raise InvalidModel("the model declares no inputs")
    wanted = metadata.input_name
    if wanted is not None and wanted not in names:
        raise InvalidModel(f"metadata input_name {wanted!r} is not an input of the model {names}")
    if len(names) > 1:
        # One tensor per Predict call: a second input could never be fed.
        raise InvalidModel(
            f"the model has {len(names)} inputs {names}; the mlinference contract feeds one tensor"
        )
    if not session.outputs:
        raise InvalidModel("the model declares no outputs")


def select_output(session: Session, metadata: ModelMetadata) -> None:
    """Put the metadata's ``output_name`` first: output 0 is what a Predict call answers."""
    wanted = metadata.output_name
    if wanted is None:
        return
    names = [spec.name for spec in session.outputs]
    name = wanted.removesuffix(":0") if wanted not in names else wanted
    if name not in names:
        raise InvalidModel(f"metadata output_name {wanted!r} is not an output of the model {names}")
    first = names.index(name)
    if first:
        order = [first, *(i for i in range(len(names)) if i != first)]
        session.outputs = [session.outputs[i] for i in order]
        session._output_order = order


def check_against_metadata(session: Session, metadata: ModelMetadata) -> None:
    """Refuse metadata that contradicts the model file: the preprocess actor trusts it."""
    spec = session.input
    declared = metadata.value_type
    if declared is not None and declared.dtype != spec.dtype:
        raise InvalidModel(
            f"metadata says tensor_type {declared} but the model's input is {spec.describe()}"
        )
    dims = metadata.tensor_dimensions_in
    if dims is not None and spec.shape is not None:
        clash = len(dims) != len(spec.shape) or any(
            a is not None and b is not None and a != b for a, b in zip(dims, spec.shape, strict=True)
        )
        if clash:
            raise InvalidModel(
                f"metadata says tensor_dimensions_in {list(dims)} but the model's input is "
                f"{spec.describe()}"
            )


def first_line(exc: BaseException) -> str:
    """A short message: tract appends Rust backtraces, onnxruntime very long node dumps."""
    text = str(exc).strip() or type(exc).__name__
    text = text.split("\nStack backtrace:")[0].strip()
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _is_bad_input(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith("onnxruntime") and name == "InvalidArgument":
        return True
    if name == "TractError":
        text = str(exc)
        return "incorrect dtype or shape" in text or "Clashing resolution" in text
    # LiteRT's interpreter raises ValueError for a tensor of the wrong type or size.
    return isinstance(exc, ValueError)


@contextlib.contextmanager
def engine_errors(
    engine: str, phase: str, error_kind: type[InferenceError] = InferenceRuntimeError
) -> Iterator[None]:
    """The single boundary where foreign engine errors become mlinference error kinds."""
    try:
        yield
    except InferenceError:
        raise
    except Exception as exc:
        message = first_line(exc)
        if phase == "load":
            raise InvalidModel(f"{engine} could not load the model: {message}") from exc
        if _is_bad_input(exc):
            raise CorruptInputTensor(f"{engine} refused the input: {message}") from exc
        raise error_kind(f"{engine} failed: {message}") from exc


# Dtype names each runtime uses, mapped to numpy (every ValueType and nothing silently widened).
ONNX_TYPE_STRINGS: dict[str, np.dtype] = {
    "tensor(float16)": np.dtype("<f2"),
    "tensor(float)": np.dtype("<f4"),
    "tensor(double)": np.dtype("<f8"),
    "tensor(uint8)": np.dtype("u1"),
    "tensor(uint16)": np.dtype("<u2"),
    "tensor(uint32)": np.dtype("<u4"),
    "tensor(uint64)": np.dtype("<u8"),
    "tensor(int8)": np.dtype("i1"),
    "tensor(int16)": np.dtype("<i2"),
    "tensor(int32)": np.dtype("<i4"),
    "tensor(int64)": np.dtype("<i8"),
    "tensor(bool)": np.dtype("?"),
}
