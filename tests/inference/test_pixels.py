"""Pixel inputs: 8-bit pixels for an image model, normalised by the provider as its metadata says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from mlcloud.bench.workload import imaging
from mlcloud.errors import CorruptInputTensor, InvalidModel
from mlcloud.inference import BatchingConfig, InferenceConfig, ModelRegistry
from mlcloud.inference.pixels import PixelNormalization
from mlcloud.interfaces import ModelState, Tensor, ValueType

from .models import metadata, onnx_model

IMAGENET = {"size": [224, 224], "resize": "bilinear", "layout": "NCHW", "divide_by": 255.0,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IMAGES = Path(__file__).resolve().parents[2] / "images"
SHAPE = [1, 3, 8, 8]


def test_the_preprocessing_block_parses() -> None:
    pixels = PixelNormalization.parse(IMAGENET)
    assert pixels == PixelNormalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 255.0)
    assert PixelNormalization.parse(None) is None
    assert PixelNormalization.parse({"mean": [0.5], "std": [0.5], "divide_by": 1}).divide_by == 1.0


@pytest.mark.parametrize("block, message", [
    ([1, 2], "must be an object"),
    ({"std": [1.0]}, "needs 'mean'"),
    ({"mean": [0.5, "x"], "std": [1.0, 1.0]}, "needs 'mean'"),
    ({"mean": [0.5], "std": [0.5, 0.5]}, "1 or 3 'mean' and as many 'std'"),
    ({"mean": [0.5, 0.5], "std": [0.5, 0.5]}, "1 or 3 'mean'"),
    ({"mean": [0.5], "std": [0.0]}, "of 0"),
    ({"mean": [0.5], "std": [1.0], "divide_by": "255"}, "'divide_by' to be a number"),
])
def test_a_bad_preprocessing_block_is_refused_naming_the_problem(block: object, message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        PixelNormalization.parse(block)


@pytest.mark.parametrize("photo", sorted(p.name for p in IMAGES.glob("*.jpg")))
def test_normalising_pixels_gives_exactly_the_preprocess_actors_f32_tensor(photo: str) -> None:
    data = (IMAGES / photo).read_bytes()
    pixels = imaging().image_to_array(data, (1, 3, 224, 224), "ValueU8")
    expected = imaging().image_to_array(data, (1, 3, 224, 224), "ValueF32")
    got = PixelNormalization.parse(IMAGENET).normalise(pixels)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)  # bit for bit: the same factors and the same two f32 steps


@pytest.mark.parametrize("dims", [(1, 224, 224, 3), (1, 1, 224, 224), (1, 224, 224, 1)])
def test_nhwc_and_grey_pixels_normalise_as_the_preprocess_actor_does(dims: tuple[int, ...]) -> None:
    data = (IMAGES / "cat.jpg").read_bytes()
    pixels = imaging().image_to_array(data, dims, "ValueU8")
    expected = imaging().image_to_array(data, dims, "ValueF32")
    assert np.array_equal(PixelNormalization.parse(IMAGENET).normalise(pixels), expected)


def test_pixels_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(CorruptInputTensor, match="not images of 1 or 3 channels"):
        PixelNormalization.parse(IMAGENET).normalise(np.zeros((1, 2, 8, 8), np.uint8))


async def _registry(tmp_path: Path, meta: dict) -> ModelRegistry:
    path = onnx_model(tmp_path / "image.onnx", shape=SHAPE)

    async def fetch(bindle_id: str) -> tuple[Path, bytes]:
        return path, json.dumps(meta).encode()

    registry = ModelRegistry(fetch, InferenceConfig(intra_op_threads=1))
    await registry.apply({"image": "image/1.0.0"})
    await registry.wait_ready(timeout=10)
    return registry


async def test_a_model_with_preprocessing_takes_pixels_and_says_so(tmp_path: Path) -> None:
    registry = await _registry(tmp_path, metadata("image", dims=SHAPE, preprocessing=IMAGENET))
    async with registry:
        (info,) = registry.status()
        assert info.inputs[0].image_datatype is ValueType.ValueU8 and info.inputs[0].datatype == "ValueF32"
        pixels = np.random.default_rng(7).integers(0, 256, SHAPE, dtype=np.uint8)
        from_pixels = await registry.predict("image", Tensor.from_numpy(pixels))
        normalised = PixelNormalization.parse(IMAGENET).normalise(pixels)
        from_floats = await registry.predict("image", Tensor.from_numpy(normalised))
        assert from_pixels.value_types == [ValueType.ValueF32]
        assert from_pixels.data == from_floats.data  # the identity model returns its input
        with pytest.raises(CorruptInputTensor, match="wrong dimensions"):
            await registry.predict("image", Tensor.from_numpy(np.zeros([1, 3, 4, 4], np.uint8)))
        with pytest.raises(CorruptInputTensor, match="wrong value type"):
            await registry.predict("image", Tensor.from_numpy(np.zeros(SHAPE, np.int16)))


async def test_a_model_without_preprocessing_refuses_pixels(tmp_path: Path) -> None:
    registry = await _registry(tmp_path, metadata("image", dims=SHAPE))
    async with registry:
        (info,) = registry.status()
        assert info.inputs[0].image_datatype is None
        with pytest.raises(CorruptInputTensor, match="wrong value type"):
            await registry.predict("image", Tensor.from_numpy(np.zeros(SHAPE, np.uint8)))


@pytest.mark.parametrize("model, preprocessing, why", [
    ({"shape": [1, 2, 8, 8]}, IMAGENET, "not an image of 1 or 3 channels"),
    ({"shape": SHAPE, "dtype": "float16"}, IMAGENET, "not f32"),
    ({"shape": SHAPE}, {"size": [8, 8], "resize": "bilinear"}, "needs 'mean'"),
])
async def test_a_preprocessing_block_that_cannot_be_used_costs_the_pixels_not_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, model: dict, preprocessing: dict, why: str,
) -> None:
    path = onnx_model(tmp_path / "image.onnx", **model)
    meta = metadata("image", dims=model["shape"], tensor_type="F16" if "dtype" in model else "F32",
                    preprocessing=preprocessing)

    async def fetch(bindle_id: str) -> tuple[Path, bytes]:
        return path, json.dumps(meta).encode()

    with caplog.at_level("WARNING"):
        async with ModelRegistry(fetch, InferenceConfig(intra_op_threads=1)) as registry:
            await registry.apply({"image": "image/1.0.0"})
            await registry.wait_ready(timeout=10)
            (info,) = registry.status()
            assert info.state is ModelState.READY and info.inputs[0].image_datatype is None
            with pytest.raises(CorruptInputTensor, match="wrong value type"):
                await registry.predict("image", Tensor.from_numpy(np.zeros(model["shape"], np.uint8)))
    assert why in caplog.text and "images" in caplog.text


async def test_batched_pixel_requests_are_normalised_together_and_each_gets_its_own_rows(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "image.onnx", shape=["N", 3, 8, 8])
    meta = json.dumps(metadata("image", dims=[-1, 3, 8, 8], preprocessing=IMAGENET)).encode()

    async def fetch(bindle_id: str) -> tuple[Path, bytes]:
        return path, meta

    batching = BatchingConfig(enabled=True, max_batch_size=8, max_wait=0.005)
    config = InferenceConfig(intra_op_threads=1, batching=batching)
    async with ModelRegistry(fetch, config) as registry:
        await registry.apply({"image": "image/1.0.0"})
        await registry.wait_ready(timeout=10)
        batcher = registry._routes["image"].active.batcher
        assert batcher is not None
        rng = np.random.default_rng(3)
        images = [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(6)]
        answers = await asyncio.gather(*(registry.predict("image", Tensor.from_numpy(x)) for x in images))
        normalise = PixelNormalization.parse(IMAGENET).normalise
        for x, answer in zip(images, answers, strict=True):
            assert np.array_equal(answer.to_numpy(), normalise(x))
        assert batcher.batches < len(images)
