"""Tiny models built inside the tests: ONNX identity/add via onnx.helper, plus3 as a TF1 GraphDef."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from mlcloud.inference.metadata import ModelMetadata


def onnx_model(
    path: Path,
    *,
    op: str = "Identity",
    dtype: np.dtype | str = "float32",
    shape: list[int | str | None] | None = None,
    constant: float | None = None,
) -> Path:
    """``y = op(x)``, or ``y = op(x, constant)`` for binary ops; IR 8 so tract reads it too."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    shape = ["N", 4] if shape is None else shape
    inputs = ["x"]
    initializers = []
    if constant is not None:
        initializers.append(onnx.numpy_helper.from_array(np.array([constant], dtype=dtype), "c"))
        inputs.append("c")
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"])],
        f"{op.lower()}_model",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def plus3_graphdef(path: Path, *, extra_op: str | None = None, shape: list[int] | None = None) -> Path:
    """The original plus3: Placeholder ``input`` + Const ``three`` → Add ``output``."""
    from tensorboard.compat.proto import graph_pb2, types_pb2

    graph = graph_pb2.GraphDef()
    node = graph.node.add(name="input", op="Placeholder")
    node.attr["dtype"].type = types_pb2.DT_FLOAT
    if shape is not None:
        for size in shape:
            node.attr["shape"].shape.dim.add(size=size)
    const = graph.node.add(name="three", op="Const")
    const.attr["dtype"].type = types_pb2.DT_FLOAT
    const.attr["value"].tensor.dtype = types_pb2.DT_FLOAT
    const.attr["value"].tensor.tensor_shape.dim.add(size=1)
    const.attr["value"].tensor.float_val.append(3.0)
    add = graph.node.add(name="output" if extra_op is None else "sum", op="Add")
    add.input.extend(["input", "three:0"])
    add.attr["T"].type = types_pb2.DT_FLOAT
    if extra_op is not None:
        last = graph.node.add(name="output", op=extra_op)
        last.input.append("sum")
        last.attr["T"].type = types_pb2.DT_FLOAT
    path.write_bytes(graph.SerializeToString())
    return path


def metadata(
    name: str = "identity",
    encoding: str = "onnx",
    dims: list[int] | None = None,
    tensor_type: str | None = "F32",
    **extra: object,
) -> dict:
    data = {
        "model_name": name,
        "graph_encoding": encoding,
        "execution_target": "cpu",
        "tensor_dimensions_in": [1, 4] if dims is None else dims,
        "tensor_dimensions_out": [1, 4] if dims is None else dims,
        **extra,
    }
    if tensor_type is not None:
        data["tensor_type"] = tensor_type
    return data


def parsed(**kwargs: object) -> ModelMetadata:
    return ModelMetadata.parse(json.dumps(metadata(**kwargs)))  # type: ignore[arg-type]


