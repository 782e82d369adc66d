"""Write ``identity_model/0.2.0``: an ONNX graph whose output is its input, f32 [1,4].

The smallest model the platform serves; tests and the ``/identity`` route use it to prove that
a tensor crosses the lattice and an engine byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

INPUT_NAME = "input"
OUTPUT_NAME = "output"
SHAPE = [1, 4]
OPSET = 13


def build_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME], name="identity")],
        "identity_model",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, SHAPE)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlcloud.modelbuild",
        producer_version="1",
    )
    model.ir_version = 8  # loadable by older onnxruntime and tract builds too
    onnx.checker.check_model(model, full_check=True)
    return model


def build(out: str | Path) -> Path:
    """Write ``identity_model.onnx`` to ``out`` (atomically) and return its path."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(build_model().SerializeToString())
    tmp.replace(out)
    return out
