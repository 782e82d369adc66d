"""Write the plus3 TensorFlow 1 frozen GraphDef (output = input + 3) without TensorFlow.

The original deployment served ``plus3/0.1.0`` as a frozen ``.pb``; we regenerate the same
graph with the protobuf classes bundled in ``tensorboard`` (``tensorboard.compat.proto``)::

    input  Placeholder  dtype=float  shape=[1,4]
    three  Const        dtype=float  value=[3.0] (shape [1])
    output Add(input, three)         T=float

The mlinference provider converts such graphs to ONNX (Placeholder → graph input, Const →
initializer, Add → Add), so the node names here are the tensor names a client sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlcloud.modelbuild.errors import ModelBuildError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
CONST_NAME = "three"
SHAPE = (1, 4)
ADDEND = 3.0
# The GraphDef version TF 1.15 writes; readers only check it is not newer than they know.
PRODUCER_VERSION = 134


def _protos() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2: generated without types, so their messages are Any here."""
    try:
        from tensorboard.compat.proto import graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    except ImportError as exc:
        raise ModelBuildError("tensorboard is not installed (pip install 'mlcloud[tf]')") from exc
    return graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2


def build_graph_def() -> Any:
    """The plus3 ``GraphDef`` message."""
    graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2 = _protos()

    def shape(dims: Sequence[int]) -> Any:
        return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])

    graph = graph_pb2.GraphDef()
    graph.versions.producer = PRODUCER_VERSION

    ph = graph.node.add(name=INPUT_NAME, op="Placeholder")
    ph.attr["dtype"].type = types_pb2.DT_FLOAT
    ph.attr["shape"].shape.CopyFrom(shape(SHAPE))

    const = graph.node.add(name=CONST_NAME, op="Const")
    const.attr["dtype"].type = types_pb2.DT_FLOAT
    const.attr["value"].tensor.CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape([1]), float_val=[ADDEND])
    )

    add = graph.node.add(name=OUTPUT_NAME, op="Add", input=[INPUT_NAME, CONST_NAME])
    add.attr["T"].type = types_pb2.DT_FLOAT
    return graph


def serialize() -> bytes:
    # deterministic=True orders the attr maps, so every build writes the same bytes.
    data: bytes = build_graph_def().SerializeToString(deterministic=True)
    return data


def build(out: str | Path) -> Path:
    """Write ``plus3.pb`` to ``out`` (atomically) and return its path."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(serialize())
    tmp.replace(out)
    return out


def parse(data: bytes) -> Any:
    """Parse a frozen GraphDef (for tests and checks)."""
    graph_pb2, *_ = _protos()
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(data)
    return graph
