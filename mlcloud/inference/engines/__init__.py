"""Inference engines and how one is chosen for a model.

The engine comes from, in order: a link-config override, the metadata's ``engine`` field, then
the default for the graph encoding::

    graph_encoding   engines                   default
    onnx             onnxruntime, tract        onnxruntime
    tensorflow       onnxruntime, tract        onnxruntime  (TF1 GraphDef converted to ONNX first)
    tflite           litert                    litert

An engine that cannot read the encoding is refused with InvalidModel, never silently replaced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcloud.errors import InvalidModel
from mlcloud.inference.engines.base import (
    Engine,
    EngineOptions,
    Session,
    TensorSpec,
    engine_errors,
)
from mlcloud.inference.metadata import ENGINES, GraphEncoding, ModelMetadata

if TYPE_CHECKING:
    from mlcloud.inference.engines.onnxruntime import OnnxRuntimeEngine
    from mlcloud.inference.engines.tract import TractEngine

DEFAULT_ENGINE = "onnxruntime"

_ENCODINGS: dict[GraphEncoding, tuple[str, ...]] = {
    GraphEncoding.ONNX: ("onnxruntime", "tract"),
    GraphEncoding.TENSORFLOW: ("onnxruntime", "tract"),
    GraphEncoding.TFLITE: ("litert",),
}


def engine_name_for(metadata: ModelMetadata, override: str | None = None) -> str:
    """The engine that will run this model, or InvalidModel saying why none can."""
    allowed = _ENCODINGS[metadata.graph_encoding]
    name = (override or metadata.engine or allowed[0]).strip().lower()
    if name not in ENGINES:
        raise InvalidModel(f"unknown engine {name!r}; expected {' | '.join(ENGINES)}")
    if name not in allowed:
        raise InvalidModel(
            f"engine {name} cannot run {metadata.graph_encoding} models (use {' or '.join(allowed)})"
        )
    return name


def create_engine(
    metadata: ModelMetadata, override: str | None = None, options: EngineOptions | None = None
) -> Engine:
    """The engine instance for a model: the runtime, behind the TF1 converter when needed."""
    name = engine_name_for(metadata, override)
    if name == "litert":  # reads TFLite files only
        from mlcloud.inference.engines.litert import LiteRtEngine

        return LiteRtEngine(options)
    runtime: OnnxRuntimeEngine | TractEngine
    if name == "onnxruntime":
        from mlcloud.inference.engines.onnxruntime import OnnxRuntimeEngine

        runtime = OnnxRuntimeEngine(options)
    else:
        from mlcloud.inference.engines.tract import TractEngine

        runtime = TractEngine(options)
    if metadata.graph_encoding is GraphEncoding.TENSORFLOW:
        from mlcloud.inference.engines.tf1 import Tf1Engine

        return Tf1Engine(runtime)
    return runtime


__all__ = [
    "DEFAULT_ENGINE",
    "Engine",
    "EngineOptions",
    "Session",
    "TensorSpec",
    "create_engine",
    "engine_errors",
    "engine_name_for",
]
