"""The tract engine (Sonos' pure-Rust ONNX runtime, the engine the original wasmCloud used).

``tract.onnx().load(path)`` → ``set_input_fact`` → ``into_model()`` → ``into_runnable()``.
The input fact keeps what the ONNX file declares (fixed or symbolic dimensions, element type)
and fills in only what it leaves open from the metadata's ``tensor_dimensions_in``, so a model
with a symbolic batch dimension stays batchable. A runnable is shared by threads: each ``run``
spawns its own state, and tract releases the GIL while it computes.

tract ships x86_64 wheels only; it is imported lazily so an aarch64 provider still starts and a
model that asks for tract fails to load with a message saying why.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from mlcloud.errors import InferenceError, InvalidModel, OnnxError
from mlcloud.inference.engines.base import Engine, Session, TensorSpec, engine_errors

if TYPE_CHECKING:
    from mlcloud.inference.metadata import ModelMetadata

_TRACT_TYPES: dict[str, np.dtype] = {
    "f16": np.dtype("<f2"),
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "u8": np.dtype("u1"),
    "u16": np.dtype("<u2"),
    "u32": np.dtype("<u4"),
    "u64": np.dtype("<u8"),
    "i8": np.dtype("i1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "bool": np.dtype("?"),
}


def _import_tract() -> Any:
    try:
        import tract
    except ImportError as exc:
        raise InvalidModel(
            "the tract engine is not installed here (PyPI 'tract' has x86_64 wheels only; "
            "install mlcloud[tract], or use engine onnxruntime)"
        ) from exc
    return tract


class TractSession(Session):
    engine = "tract"

    def __init__(self, runnable: Any, *, error_kind: type[InferenceError] = OnnxError) -> None:
        super().__init__(
            [_spec(f"input_{i}", runnable.input_fact(i)) for i in range(runnable.input_count())],
            [_spec(f"output_{i}", runnable.output_fact(i)) for i in range(runnable.output_count())],
            error_kind=error_kind,
        )
        self._runnable = runnable

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        # tract wants writable, contiguous arrays; request tensors are read-only views.
        feed = [np.require(a, requirements=("C", "W")) for a in arrays]
        return [t.to_numpy() for t in self._runnable.run(feed)]

    def unload(self) -> None:
        self._runnable = None


class TractEngine(Engine):
    name = "tract"

    def _load(self, path: Path, metadata: ModelMetadata) -> Session:
        return self._runnable(path, metadata, OnnxError)

    def load_proto(
        self, model: onnx.ModelProto, metadata: ModelMetadata, error_kind: type[InferenceError]
    ) -> Session:
        """Load an in-memory ONNX model (a converted TF1 graph); tract reads only files."""
        with engine_errors(self.name, "load"):
            fd, name = tempfile.mkstemp(suffix=".onnx", prefix="mlcloud-tract-")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(model.SerializeToString())
                return self._runnable(Path(name), metadata, error_kind)
            finally:
                os.unlink(name)

    def _runnable(
        self, path: Path, metadata: ModelMetadata, error_kind: type[InferenceError]
    ) -> Session:
        tract = _import_tract()
        model = tract.onnx().load(str(path))
        names = [model.input_name(i) for i in range(model.input_count())]
        # tract names outputs after the node that makes them ("fc"), not the graph's output
        # tensor ("logits") that the metadata and other engines use; take the graph's names.
        out_names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
        if len(out_names) != model.output_count():
            out_names = [model.output_name(i) for i in range(model.output_count())]
        for i in range(model.input_count()):
            fact = _complete_fact(model.input_fact(i).dump(), metadata.tensor_dimensions_in)
            model.set_input_fact(i, fact)
        session = TractSession(model.into_model().into_runnable(), error_kind=error_kind)
        # The runnable's facts carry no names; keep the graph's for errors and /models.
        session.inputs = [
            TensorSpec(name, spec.dtype, spec.shape) for name, spec in zip(names, session.inputs, strict=True)
        ]
        session.outputs = [
            TensorSpec(name, spec.dtype, spec.shape) for name, spec in zip(out_names, session.outputs, strict=True)
        ]
        return session


def _parse_fact(text: str) -> tuple[list[str] | None, str]:
    """``"N,3,224,224,f32"`` → (["N","3","224","224"], "f32"); ``"..,f32"`` → (None, "f32")."""
    *dims, dtype = text.strip().split(",")
    if dims == [".."] or any(d == ".." for d in dims):
        return None, dtype
    return dims, dtype


def _complete_fact(text: str, metadata_dims: tuple[int | None, ...] | None) -> str:
    dims, dtype = _parse_fact(text)
    if dims is None:
        if metadata_dims is None:
            return text  # tract infers the rest from the graph, or says it cannot
        dims = ["?"] * len(metadata_dims)
    out = []
    for i, dim in enumerate(dims):
        if dim == "?" and metadata_dims is not None and i < len(metadata_dims):
            meta = metadata_dims[i]
            dim = "N" if meta is None else str(meta)
        out.append(dim)
    return ",".join([*out, dtype])


def _spec(name: str, fact: Any) -> TensorSpec:
    dims, dtype_name = _parse_fact(fact.dump())
    dtype = _TRACT_TYPES.get(dtype_name.lower())
    if dtype is None:
        raise InvalidModel(f"tensor {name} has tract type {dtype_name}, which no tensor value type carries")
    shape = None if dims is None else tuple(int(d) if d.isdigit() else None for d in dims)
    return TensorSpec(name, dtype, shape)
