"""Pixel inputs: an image model fed 8-bit pixels, normalised by the provider right before the run.

An ImageNet model's input is ``(pixel / 255 - mean) / std`` per channel, as f32: 4 bytes a value.
A model whose metadata declares that normalisation (its ``preprocessing`` block: ``mean``,
``std``, ``divide_by``) also takes the pixels themselves as a U8 tensor of the same shape, a
quarter of the bytes on the lattice (150 KB instead of 600 KB for 224×224 RGB), and the provider
applies the declared normalisation in the inference thread. F32 tensors are still taken as they
are. The registry advertises it in the model's status as ``image_datatype: ValueU8`` on the
input, which the api actor asks the preprocess actor for.

The channel axis is read from the tensor's shape the way the preprocess actor lays an image out
(channels first when both readings fit), and the factors come from :func:`mlcloud.imagemath.affine`,
the preprocess actor's own, so an 8-bit image gives the same f32 tensor bit for bit whichever side
normalises it. (A 16-bit image sent as pixels is rounded to 8 bits first; the preprocess actor's
f32 path would keep the extra precision, a difference of at most half an 8-bit step.)

A block that cannot be used (malformed, or not fitting the model's input) is not an error: the
model loads, a warning says why, and images go as f32 as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcloud.errors import CorruptInputTensor, InvalidModel
from mlcloud.imagemath import affine
from mlcloud.interfaces import ValueType

PIXEL_TYPE = ValueType.ValueU8
IMAGE_CHANNELS = (1, 3)


@dataclass(frozen=True, slots=True)
class PixelNormalization:
    """The metadata's ``preprocessing``: ``{"mean": [...], "std": [...], "divide_by": 255, …}``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    divide_by: float = 255.0

    @classmethod
    def parse(cls, value: Any) -> PixelNormalization | None:
        """The block, or None when there is none; InvalidModel naming what is wrong with it."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidModel(f"model metadata 'preprocessing' must be an object, got {value!r}")
        mean, std = _factors(value, "mean"), _factors(value, "std")
        divide_by = value.get("divide_by", 255.0)
        if not _is_number(divide_by):
            raise InvalidModel(f"model metadata 'preprocessing' needs 'divide_by' to be a number, got {divide_by!r}")
        if len(mean) != len(std) or len(mean) not in IMAGE_CHANNELS:
            raise InvalidModel("model metadata 'preprocessing' needs 1 or 3 'mean' and as many 'std' values")
        if any(s == 0 for s in (*std, divide_by)):
            raise InvalidModel("model metadata 'preprocessing' has a 'std' or 'divide_by' of 0")
        return cls(mean, std, float(divide_by))

    @staticmethod
    def misfit(dtype: np.dtype, shape: tuple[int | None, ...] | None) -> str:
        """Why a model input of ``dtype`` and ``shape`` cannot take pixels ("" when it can)."""
        if dtype != np.float32:
            return f"the model's input is {dtype}, not f32"
        if shape is not None and (len(shape) != 4 or _channel_axis(shape) is None):
            return f"the model's input {list(shape)} is not an image of 1 or 3 channels"
        return ""

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` (uint8, N×C×H×W or N×H×W×C) as the model's f32 input."""
        axis = _channel_axis(pixels.shape) if pixels.ndim == 4 else None
        if axis is None:
            raise CorruptInputTensor(f"pixels of shape {list(pixels.shape)} are not images of 1 or 3 channels")
        channels = pixels.shape[axis]
        scale, offset = affine(self.mean, self.std, channels, self.divide_by, "<f4")
        shape = [1, 1, 1, 1]
        shape[axis] = channels
        out: np.ndarray = np.multiply(pixels, scale.reshape(shape), dtype=np.float32)
        out += offset.reshape(shape)
        return out


def _channel_axis(shape: tuple[int | None, ...]) -> int | None:
    """1 (N, C, H, W) or 3 (N, H, W, C), as the preprocess actor reads a layout; a symbolic
    dimension may be either."""
    for axis in (1, 3):
        if shape[axis] is None or shape[axis] in IMAGE_CHANNELS:
            return axis
    return None


def _factors(value: Mapping[str, Any], key: str) -> tuple[float, ...]:
    raw = value.get(key)
    if not isinstance(raw, list) or not raw or not all(_is_number(v) for v in raw):
        raise InvalidModel(f"model metadata 'preprocessing' needs {key!r}: a list of numbers, got {raw!r}")
    return tuple(float(v) for v in raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
