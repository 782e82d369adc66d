"""TFLite models for the aarch64 board path, written as flatbuffers without TensorFlow.

A ``.tflite`` file is a flatbuffer of the TFLite schema (``schema.fbs``, file identifier
``TFL3``). We write it with the ``flatbuffers`` runtime alone (a dependency of onnxruntime, so
always installed); the field slots below are those of the schema, the same numbers the PyPI
``tflite`` package's generated code uses (``ModelAddBuffers`` is slot 4, and so on). The tests
parse the file back with that package and run it with ``ai-edge-litert`` where they are installed.

``plus3.tflite``: output = input + 3 for a float32 ``[N, 4]`` input (batch dimension symbolic in
``shape_signature``), one ``ADD`` of a constant ``[1]`` tensor, the TFLite twin of the TF1
``plus3.pb``. It runs on LiteRT's CPU kernels; the Edge TPU only takes int8 models compiled by
``edgetpu_compiler``, so with the delegate loaded LiteRT still runs this float graph on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

# schema.fbs enums
TENSOR_FLOAT32 = 0
BUILTIN_ADD = 0
BUILTIN_CUSTOM = 32  # a custom op, named by OperatorCode.custom_code
BUILTIN_OPTIONS_ADD = 11  # union BuiltinOptions: AddOptions
ACTIVATION_NONE = 0


@dataclass
class TensorDef:
    name: str
    shape: list[int]  # -1 for a symbolic dimension
    buffer: int
    dtype: int = TENSOR_FLOAT32


@dataclass
class OperatorDef:
    opcode: int  # index into the model's operator codes
    inputs: list[int]
    outputs: list[int]


@dataclass
class TfliteGraph:
    """One subgraph with its buffers, enough for small hand-made models."""

    description: str
    # (builtin code, custom code name or "") per operator code
    codes: list[tuple[int, str]] = field(default_factory=list)
    tensors: list[TensorDef] = field(default_factory=list)
    operators: list[OperatorDef] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    # Buffer 0 is the empty sentinel every TFLite file starts with.
    buffers: list[bytes] = field(default_factory=lambda: [b""])

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        self.buffers.append(b"" if data is None else np.ascontiguousarray(data, dtype="<f4").tobytes())
        self.tensors.append(TensorDef(name, shape, len(self.buffers) - 1))
        return len(self.tensors) - 1

    def op(self, builtin: int, inputs: list[int], outputs: list[int], custom: str = "") -> None:
        """An operator; ``custom`` names a custom op (``builtin`` is then BUILTIN_CUSTOM)."""
        code = (builtin, custom)
        if code not in self.codes:
            self.codes.append(code)
        self.operators.append(OperatorDef(self.codes.index(code), inputs, outputs))

    def serialize(self) -> bytes:
        b = flatbuffers.Builder(1024)

        def int_vector(values: list[int]) -> int:
            b.StartVector(4, len(values), 4)
            for v in reversed(values):
                b.PrependInt32(v)
            return int(b.EndVector())  # flatbuffers is untyped

        def table_vector(offsets: list[int]) -> int:
            b.StartVector(4, len(offsets), 4)
            for off in reversed(offsets):
                b.PrependUOffsetTRelative(off)
            return int(b.EndVector())

        buffers = []
        for data in self.buffers:
            data_off = None
            if data:
                b.Prep(16, len(data))  # keep constant data 16-byte aligned, as the converter does
                data_off = b.CreateByteVector(data)
            b.StartObject(3)  # Buffer
            if data_off is not None:
                b.PrependUOffsetTRelativeSlot(0, data_off, 0)  # data
            buffers.append(b.EndObject())

        tensors = []
        for t in self.tensors:
            name = b.CreateString(t.name)
            shape = int_vector([1 if d < 0 else d for d in t.shape])
            signature = int_vector(t.shape) if any(d < 0 for d in t.shape) else None
            b.StartObject(10)  # Tensor
            b.PrependUOffsetTRelativeSlot(0, shape, 0)
            b.PrependInt8Slot(1, t.dtype, 0)
            b.PrependUint32Slot(2, t.buffer, 0)
            b.PrependUOffsetTRelativeSlot(3, name, 0)
            if signature is not None:
                b.PrependUOffsetTRelativeSlot(7, signature, 0)  # shape_signature
            tensors.append(b.EndObject())

        operators = []
        for op in self.operators:
            ins, outs = int_vector(op.inputs), int_vector(op.outputs)
            add = self.codes[op.opcode][0] == BUILTIN_ADD
            if add:
                b.StartObject(2)  # AddOptions
                b.PrependInt8Slot(0, ACTIVATION_NONE, 0)
                options = b.EndObject()
            b.StartObject(14)  # Operator
            b.PrependUint32Slot(0, op.opcode, 0)
            b.PrependUOffsetTRelativeSlot(1, ins, 0)
            b.PrependUOffsetTRelativeSlot(2, outs, 0)
            if add:
                b.PrependUint8Slot(3, BUILTIN_OPTIONS_ADD, 0)
                b.PrependUOffsetTRelativeSlot(4, options, 0)
            operators.append(b.EndObject())

        tensors_vec, operators_vec = table_vector(tensors), table_vector(operators)
        inputs_vec, outputs_vec = int_vector(self.inputs), int_vector(self.outputs)
        subgraph_name = b.CreateString("main")
        b.StartObject(6)  # SubGraph
        b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
        b.PrependUOffsetTRelativeSlot(1, inputs_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, outputs_vec, 0)
        b.PrependUOffsetTRelativeSlot(3, operators_vec, 0)
        b.PrependUOffsetTRelativeSlot(4, subgraph_name, 0)
        subgraph = b.EndObject()

        codes = []
        for code, custom in self.codes:
            custom_off = b.CreateString(custom) if custom else None
            b.StartObject(4)  # OperatorCode
            b.PrependInt8Slot(0, min(code, 127), 0)  # deprecated_builtin_code, for old readers
            if custom_off is not None:
                b.PrependUOffsetTRelativeSlot(1, custom_off, 0)  # custom_code
            b.PrependInt32Slot(2, 1, 1)  # version
            b.PrependInt32Slot(3, code, 0)  # builtin_code
            codes.append(b.EndObject())

        codes_vec, subgraphs_vec = table_vector(codes), table_vector([subgraph])
        buffers_vec = table_vector(buffers)
        description = b.CreateString(self.description)
        b.StartObject(8)  # Model
        b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
        b.PrependUOffsetTRelativeSlot(1, codes_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)
        b.PrependUOffsetTRelativeSlot(3, description, 0)
        b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
        b.Finish(b.EndObject(), file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())


def plus3_graph() -> TfliteGraph:
    graph = TfliteGraph("mlcloud plus3: output = input + 3")
    x = graph.tensor("input", [-1, 4])
    three = graph.tensor("three", [1], np.array([3.0], dtype=np.float32))
    y = graph.tensor("output", [-1, 4])
    graph.op(BUILTIN_ADD, [x, three], [y])
    graph.inputs, graph.outputs = [x], [y]
    return graph


def build(path: Path) -> Path:
    """Write ``plus3.tflite`` to ``path``."""
    path = Path(path)
    path.write_bytes(plus3_graph().serialize())
    return path


def verify(path: Path) -> str:
    """Parse the file back (identifier, shapes, the constant) and run it when LiteRT is here."""
    from mlcloud.modelbuild.errors import VerificationError

    data = Path(path).read_bytes()
    if data[4:8] != FILE_IDENTIFIER:
        raise VerificationError(f"{path}: not a TFLite flatbuffer (identifier {data[4:8]!r})")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return "flatbuffer identifier ok (ai-edge-litert not installed: not run)"
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    if not np.array_equal(y, x + 3):
        raise VerificationError(f"{path}: litert computed {y.tolist()} for [[1, 2, 3, 4]]")
    return "litert: [[1,2,3,4]] → [[4,5,6,7]]"
