"""The EfficientNet-Lite0 conversion classifies real photos, the same on both engines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from mlcloud.modelbuild import efficientnet_lite0 as enet, verify
from mlcloud.modelbuild.errors import VerificationError

tract = pytest.importorskip("tract", reason="tract has x86_64 wheels only")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return verify.imagenet_tensor(verify.skimage_photo("chelsea"))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(224, 3, 2, (0, 1)), (112, 3, 1, (1, 1)), (112, 5, 2, (1, 2)), (7, 1, 1, (0, 0)), (14, 5, 1, (2, 2))],
)
def test_same_padding_puts_the_extra_pixel_after(size, kernel, stride, pads):
    assert enet.same_pads(size, kernel, stride) == pads


def test_batch_norm_folding_matches_conv_then_bn():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 1, 1)).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=4).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 2, size=4).astype(np.float32)
    x = rng.normal(size=2).astype(np.float32)
    conv = w[:, :, 0, 0] @ x
    expected = gamma * (conv - mean) / np.sqrt(var + enet.BN_EPS) + beta
    fw, fb = enet.fold_batch_norm(w, gamma, beta, mean, var)
    np.testing.assert_allclose(fw[:, :, 0, 0] @ x + fb, expected, rtol=1e-5, atol=1e-6)


def test_graph_interface_and_shape(enet_onnx: Path):
    model = onnx.load(str(enet_onnx))
    assert model.opset_import[0].version == 13
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input"
    # The batch dimension is symbolic (adaptive batching can stack requests); the rest is fixed.
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 3, 224, 224]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1000]
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops  # folded
    assert ops.count("Conv") == 1 + 16 * 2 + 15 + 1  # stem, dw+project per block, 15 expands, head
    assert ops.count("Clip") == ops.count("Conv") - 16  # ReLU6 after every conv but the projections
    assert ops.count("Add") == 9  # residual blocks: stride 1 and in == out
    assert 17_000_000 < enet_onnx.stat().st_size < 20_000_000


def test_conversion_is_byte_reproducible(enet_onnx: Path, tmp_path: Path):
    again = enet.build(tmp_path / "again.onnx")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(enet_onnx.read_bytes()).digest()


def test_chelsea_is_an_egyptian_cat_on_onnxruntime(enet_onnx: Path, chelsea: np.ndarray):
    probs = enet.predict(enet_onnx, chelsea, "onnxruntime")
    assert probs.shape == (1000,)
    assert verify.top_k(probs, 3) == [verify.EGYPTIAN_CAT, verify.TIGER_CAT, verify.TABBY]
    assert probs[verify.EGYPTIAN_CAT] == pytest.approx(0.80, abs=0.01)
    assert probs[verify.TIGER_CAT] == pytest.approx(0.08, abs=0.01)
    assert probs[verify.TABBY] == pytest.approx(0.08, abs=0.01)


def test_tract_and_onnxruntime_give_the_same_top5(enet_onnx: Path, chelsea: np.ndarray):
    ort_probs = enet.predict(enet_onnx, chelsea, "onnxruntime")
    tract_probs = enet.predict(enet_onnx, chelsea, "tract")
    assert verify.top_k(ort_probs) == verify.top_k(tract_probs)
    np.testing.assert_allclose(ort_probs, tract_probs, atol=1e-5)


def test_check_classifier_passes_on_both_engines(enet_onnx: Path):
    report = verify.check_classifier(enet_onnx, ["onnxruntime", "tract"])
    assert report["tract"]["coffee"][0][0] == verify.ESPRESSO
    assert report["onnxruntime"]["coffee"][0][1] == pytest.approx(0.86, abs=0.01)


def test_check_classifier_rejects_a_wrong_model(enet_onnx: Path, tmp_path: Path):
    model = onnx.load(str(enet_onnx))
    fc_bias = next(i for i in model.graph.initializer if i.name == "fc.bias")
    bias = onnx.numpy_helper.to_array(fc_bias).copy()
    bias[0] += 100.0  # everything becomes a tench
    fc_bias.CopyFrom(onnx.numpy_helper.from_array(bias, "fc.bias"))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(VerificationError, match="chelsea"):
        verify.check_classifier(broken, ["onnxruntime"])


def test_check_uses_the_committed_photos_without_scikit_image(enet_onnx: Path, monkeypatch):
    from mlcloud.modelbuild import images
    from mlcloud.modelbuild.errors import ModelBuildError

    real = images.package_dir

    def without_skimage(package: str) -> Path:
        if package == "skimage":
            raise ModelBuildError("skimage is not installed")
        return real(package)

    monkeypatch.setattr(images, "package_dir", without_skimage)
    report = verify.check_classifier(enet_onnx, ["onnxruntime"])
    # cat.jpg, not chelsea.png: the JPEG round trip gives 0.815 instead of 0.799.
    assert report["onnxruntime"]["chelsea"][0][0] == verify.EGYPTIAN_CAT
    assert report["onnxruntime"]["chelsea"][0][1] == pytest.approx(0.815, abs=0.005)
