"""TF1 frozen GraphDefs, converted to ONNX without TensorFlow, then run on onnxruntime or tract.

The original deployment served ``plus3`` (Placeholder ``input`` + Const ``three`` → ``Add``
``output``) as a TensorFlow frozen graph. TensorFlow itself weighs 1.7 GB; the protos bundled with
``tensorboard`` parse a GraphDef, and a frozen inference graph of elementwise ops, MatMul and
friends maps one-to-one onto ONNX:

* ``Placeholder`` → graph input (its ``shape`` attr, or the metadata's dimensions when unset);
  ``PlaceholderWithDefault`` → Identity of its default (training switches keep their default);
* ``Const`` → initializer;
* the ops in :data:`_SIMPLE_OPS` and a few with attributes (MatMul transposes, Relu6, Rsqrt,
  Square, Reshape, Cast, BiasAdd, ConcatV2, Softmax) → their ONNX counterparts.

Only what the output depends on is converted, so save/restore and training nodes left in a
frozen file do no harm. Anything else (Conv2D, pooling, batch norm: real image models) raises
:class:`UnsupportedOp` naming the op and the node; ``mlcloud deploy`` then converts the graph
with tf2onnx instead, once, at import time (:mod:`mlcloud.modelbuild.convert`), and the provider
loads the ONNX result. The output is the metadata's ``output_name``, else the one node nothing
else consumes; :func:`graph_io` tells both converters the same inputs and output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcloud.errors import TensorflowError
from mlcloud.inference.engines.base import Engine, Session

if TYPE_CHECKING:
    import onnx

    from mlcloud.inference.engines.onnxruntime import OnnxRuntimeEngine
    from mlcloud.inference.engines.tract import TractEngine
    from mlcloud.inference.metadata import ModelMetadata

OPSET = 13
# tract and older onnxruntime builds read IR 8 (opset 13's); newer onnx writes IR 10+ by default.
IR_VERSION = 8

_SIMPLE_OPS = {
    "Add": "Add",
    "AddV2": "Add",
    "Sub": "Sub",
    "Mul": "Mul",
    "RealDiv": "Div",
    "Div": "Div",
    "Maximum": "Max",
    "Minimum": "Min",
    "Pow": "Pow",
    "Identity": "Identity",
    "Snapshot": "Identity",
    "StopGradient": "Identity",
    "Relu": "Relu",
    "Sigmoid": "Sigmoid",
    "Tanh": "Tanh",
    "Exp": "Exp",
    "Log": "Log",
    "Sqrt": "Sqrt",
    "Abs": "Abs",
    "Neg": "Neg",
    "Floor": "Floor",
    "Ceil": "Ceil",
    "Reciprocal": "Reciprocal",
    "Inv": "Reciprocal",
    "MatMul": "MatMul",
}
_SPECIAL_OPS = {"Placeholder", "PlaceholderWithDefault", "Const", "Relu6", "Rsqrt", "Square",
                "Reshape", "Cast", "BiasAdd", "ConcatV2", "Softmax"}
SUPPORTED_OPS = frozenset(_SIMPLE_OPS) | frozenset(_SPECIAL_OPS)


class UnsupportedOp(TensorflowError):
    """The graph needs an op (or an op's form) this converter does not know; tf2onnx may."""

    kind = "TensorflowError"  # on the wire as any other TF1 conversion error


def _tf_dtypes() -> dict[int, np.dtype]:
    from tensorboard.compat.proto import types_pb2 as t

    return {
        t.DT_HALF: np.dtype("<f2"),
        t.DT_FLOAT: np.dtype("<f4"),
        t.DT_DOUBLE: np.dtype("<f8"),
        t.DT_UINT8: np.dtype("u1"),
        t.DT_UINT16: np.dtype("<u2"),
        t.DT_UINT32: np.dtype("<u4"),
        t.DT_UINT64: np.dtype("<u8"),
        t.DT_INT8: np.dtype("i1"),
        t.DT_INT16: np.dtype("<i2"),
        t.DT_INT32: np.dtype("<i4"),
        t.DT_INT64: np.dtype("<i8"),
        t.DT_BOOL: np.dtype("?"),
    }


def _tensor_name(ref: str) -> str:
    """TF input refs: ``node`` and ``node:0`` are the same tensor; ``^node`` is control only."""
    return ref[:-2] if ref.endswith(":0") else ref


class _Converter:
    def __init__(self, graph: Any, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.dtypes = _tf_dtypes()
        self.nodes = {node.name: node for node in graph.node}
        self.onnx_nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.tensor_dtype: dict[str, np.dtype] = {}
        self.consts: dict[str, np.ndarray] = {}
        self._fresh = 0

    # -- helpers ---------------------------------------------------------------------------
    def _dtype(self, node: Any, attr: str) -> np.dtype:
        code = node.attr[attr].type
        dtype = self.dtypes.get(code)
        if dtype is None:
            from tensorboard.compat.proto import types_pb2

            raise TensorflowError(
                f"node {node.name!r} ({node.op}) has type {types_pb2.DataType.Name(code)}, "
                "which no tensor value type carries"
            )
        return dtype

    def _data_inputs(self, node: Any) -> list[str]:
        return [_tensor_name(ref) for ref in node.input if not ref.startswith("^")]

    def _const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self._fresh += 1
        unique = f"{name}__mlcloud{self._fresh}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), unique))
        return unique

    def _node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> None:
        from onnx import helper

        self.onnx_nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))

    # -- conversion ------------------------------------------------------------------------
    def convert(self) -> onnx.ModelProto:
        from onnx import helper, shape_inference

        outputs = self._outputs()
        for name in self._topological(outputs):
            self._convert_node(self.nodes[name])
        graph_outputs = [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(self.tensor_dtype[name]), None
            )
            for name in outputs
        ]
        graph = helper.make_graph(
            self.onnx_nodes, self.metadata.model_name or "tf1", self.inputs, graph_outputs,
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlcloud-tf1"
        )
        model.ir_version = IR_VERSION
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as exc:  # onnx raises InferenceError/ValidationError subclasses
            raise TensorflowError(f"the converted graph is inconsistent: {exc}") from exc
        return inferred

    def _outputs(self) -> list[str]:
        wanted = self.metadata.output_name
        if wanted:
            name = _tensor_name(wanted)
            if name not in self.nodes:
                raise TensorflowError(f"metadata output_name {wanted!r} is not a node of the graph")
            return [name]
        consumed = {
            _tensor_name(ref).lstrip("^").split(":")[0]
            for node in self.nodes.values()
            for ref in node.input
        }
        ends = [
            name
            for name, node in self.nodes.items()
            if name not in consumed and node.op not in {"Const", "Placeholder", "NoOp", "SaveV2",
                                                         "RestoreV2", "Assign", "VarHandleOp"}
        ]
        if len(ends) != 1:
            raise TensorflowError(
                f"cannot tell the graph's output: candidates {ends or 'none'}; set output_name "
                "in the model metadata"
            )
        return ends

    def _topological(self, outputs: list[str]) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done
        stack: list[tuple[str, bool]] = [(name, False) for name in reversed(outputs)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise TensorflowError(f"the graph has a cycle through {name!r}")
            node = self.nodes.get(name)
            if node is None:
                raise TensorflowError(f"the graph refers to a missing node {name!r}")
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(self._data_inputs(node)):
                source = ref.split(":")[0]  # the node of output ``node:1``
                if state.get(source) != 2:
                    stack.append((source, False))
        return order

    def _convert_node(self, node: Any) -> None:
        from onnx import helper

        op, name = node.op, node.name
        inputs = self._data_inputs(node)
        if op == "Placeholder":
            dtype = self._dtype(node, "dtype")
            self.tensor_dtype[name] = dtype
            dims = self._placeholder_dims(node)
            self.inputs.append(
                helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), dims)
            )
            return
        if op == "Const":
            array = _tensor_to_numpy(node.attr["value"].tensor, self.dtypes, name)
            self.consts[name] = array
            self.tensor_dtype[name] = array.dtype
            from onnx import numpy_helper

            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            return
        if op not in SUPPORTED_OPS:
            raise UnsupportedOp(
                f"unsupported TensorFlow op {op!r} (node {name!r}); the TF1 converter handles "
                f"{', '.join(sorted(SUPPORTED_OPS))}"
            )
        for ref in inputs:
            if ":" in ref:
                raise UnsupportedOp(
                    f"node {name!r} ({op}) reads output {ref!r}; only single-output ops are supported"
                )
        for ref in inputs:
            if ref not in self.tensor_dtype:
                raise TensorflowError(f"node {name!r} reads {ref!r}, which is defined after it")
        dtype = self.tensor_dtype[inputs[0]] if inputs else np.dtype("<f4")
        if op in _SIMPLE_OPS:
            onnx_inputs = inputs
            if op == "MatMul":
                onnx_inputs = [
                    self._transposed(inputs[0], node.attr["transpose_a"].b),
                    self._transposed(inputs[1], node.attr["transpose_b"].b),
                ]
            self._node(_SIMPLE_OPS[op], onnx_inputs, name)
        elif op == "PlaceholderWithDefault":
            self._node("Identity", inputs[:1], name)
        elif op == "Relu6":
            low = self._const(name + "/min", np.zeros((), dtype))
            high = self._const(name + "/max", np.full((), 6, dtype))
            self._node("Clip", [inputs[0], low, high], name)
        elif op == "Rsqrt":
            self._node("Sqrt", inputs, name + "/sqrt")
            self._node("Reciprocal", [name + "/sqrt"], name)
        elif op == "Square":
            self._node("Mul", [inputs[0], inputs[0]], name)
        elif op == "Softmax":
            self._node("Softmax", inputs, name, axis=-1)
        elif op == "BiasAdd":
            layout = node.attr["data_format"].s.decode() or "NHWC"
            if layout != "NHWC":
                raise UnsupportedOp(f"unsupported TensorFlow op 'BiasAdd' with data_format {layout} (node {name!r})")
            self._node("Add", inputs, name)
        elif op == "Reshape":
            # TF shapes are int32; ONNX Reshape takes int64.
            shape = name + "/shape_i64"
            self._node("Cast", [inputs[1]], shape, to=helper.np_dtype_to_tensor_dtype(np.dtype("<i8")))
            self._node("Reshape", [inputs[0], shape], name)
        elif op == "Cast":
            dtype = self._dtype(node, "DstT")
            self._node("Cast", inputs[:1], name, to=helper.np_dtype_to_tensor_dtype(dtype))
        elif op == "ConcatV2":
            *values, axis_ref = inputs
            if axis_ref not in self.consts:
                raise UnsupportedOp(f"ConcatV2 node {name!r} has a non-constant axis")
            self._node("Concat", values, name, axis=int(self.consts[axis_ref]))
        self.tensor_dtype[name] = dtype

    def _transposed(self, ref: str, transpose: bool) -> str:
        if not transpose:
            return ref
        out = f"{ref}__transposed{self._fresh}"
        self._fresh += 1
        self._node("Transpose", [ref], out, perm=[1, 0])
        return out

    def _placeholder_dims(self, node: Any) -> list[int | str] | None:
        shape = node.attr["shape"].shape if "shape" in node.attr else None
        if shape is None or shape.unknown_rank:
            meta = self.metadata.tensor_dimensions_in
            if meta is None:
                return None
            dims: list[int | None] = list(meta)
        else:
            dims = [None if dim.size < 0 else dim.size for dim in shape.dim]
        # Distinct symbols: dimensions sharing a name would be forced equal.
        return [d if d is not None else ("N" if i == 0 else f"{node.name}_d{i}") for i, d in enumerate(dims)]


def _tensor_to_numpy(tensor: Any, dtypes: dict[int, np.dtype], node: str) -> np.ndarray:
    from tensorboard.compat.proto import types_pb2 as t

    dtype = dtypes.get(tensor.dtype)
    if dtype is None:
        raise TensorflowError(
            f"Const {node!r} has type {t.DataType.Name(tensor.dtype)}, which no tensor value type "
            "carries"
        )
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        if tensor.dtype == t.DT_HALF:
            values = np.array(tensor.half_val, dtype="<u2").view("<f2")
        else:
            field = {
                t.DT_FLOAT: "float_val", t.DT_DOUBLE: "double_val", t.DT_INT64: "int64_val",
                t.DT_BOOL: "bool_val", t.DT_UINT32: "uint32_val", t.DT_UINT64: "uint64_val",
            }.get(tensor.dtype, "int_val")
            values = np.array(getattr(tensor, field), dtype=dtype)
        # TF stores a constant fill as one value (or a prefix padded with its last value).
        if values.size == 0:
            array = np.zeros(count, dtype)
        elif values.size < count:
            array = np.concatenate([values, np.full(count - values.size, values[-1], dtype)])
        else:
            array = values
    if array.size != count:
        raise TensorflowError(f"Const {node!r} holds {array.size} values for shape {shape}")
    return array.reshape(shape).astype(dtype, copy=True)


def graphdef_to_onnx(data: bytes, metadata: ModelMetadata) -> onnx.ModelProto:
    """Convert a serialized TF1 frozen GraphDef to an ONNX model (opset 13)."""
    return _Converter(_parse(data), metadata).convert()


def graph_io(data: bytes, metadata: ModelMetadata) -> tuple[list[str], list[str]]:
    """The node names of the graph's inputs (the Placeholders the output depends on) and output."""
    converter = _Converter(_parse(data), metadata)
    outputs = converter._outputs()
    inputs = [name for name in converter._topological(outputs) if converter.nodes[name].op == "Placeholder"]
    return inputs, outputs


def _parse(data: bytes) -> Any:
    try:
        from google.protobuf.message import DecodeError
        from tensorboard.compat.proto import graph_pb2
    except ImportError as exc:
        raise TensorflowError(
            "TF1 graphs need the protos bundled with tensorboard (install mlcloud[tf])"
        ) from exc
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except DecodeError as exc:
        raise TensorflowError(f"not a TF1 frozen GraphDef: {exc}") from exc
    if not graph.node:
        raise TensorflowError("the GraphDef has no nodes")
    return graph


class Tf1Engine(Engine):
    """A TF1 front end over an ONNX engine (onnxruntime or tract): converts, then loads."""

    def __init__(self, runtime: OnnxRuntimeEngine | TractEngine) -> None:
        super().__init__(runtime.options)
        self.runtime = runtime
        self.name = runtime.name  # the engine that runs it, as reported

    def _load(self, path: Path, metadata: ModelMetadata) -> Session:
        try:
            model = graphdef_to_onnx(path.read_bytes(), metadata)
        except UnsupportedOp as exc:
            raise UnsupportedOp(f"{exc.message}; `mlcloud deploy {path.name}` converts such graphs with "
                                "tf2onnx") from exc
        return self.runtime.load_proto(model, metadata, TensorflowError)
