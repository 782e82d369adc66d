"""Pixel inputs: an image model fed 8-bit pixels, normalised by the provider right before the run.

An ImageNet model's input is ``(pixel / 255 - mean) / std`` per channel, as f32: 4 bytes a value.
A model whose metadata declares that normalisation (its ``preprocessing`` block: ``mean``,
``std``, ``divide_by``, ``layout``) also takes the pixels themselves as a U8 tensor of the same shape, a quarter of the bytes on the lattice (150 KB
instead of 600 KB for 224×224 RGB), and the provider applies the declared normalisation in the
inference thread. F32 tensors are still taken as they are. The registry advertises it in the
model's status as ``image_datatype: ValueU8`` on the input, which the api actor asks the
preprocess actor for.

The arithmetic is the preprocess actor's (``imaging.py``): factors computed in f64, rounded to
f32 once, then one multiply and one add in f32, so an 8-bit image gives the same f32 tensor
whichever side normalises it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcloud.errors import InvalidModel
from mlcloud.interfaces import ValueType

LAYOUTS = ("NCHW", "NHWC")
PIXEL_TYPE = ValueType.ValueU8


@dataclass(frozen=True, slots=True)
class PixelNormalization:
    """The metadata's ``preprocessing``: ``{"mean": [...], "std": [...], "divide_by": 255, "layout": "NCHW"}``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    divide_by: float = 255.0

    @classmethod
    def parse(cls, value: Any) -> PixelNormalization | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidModel(f"model metadata 'preprocessing' must be an object, got {value!r}")
        mean, std = _factors(value, "mean"), _factors(value, "std")
        divide_by = value.get("divide_by", 255.0)
        if not _is_number(divide_by):
            raise InvalidModel(f"model metadata 'preprocessing' needs 'divide_by' to be a number, got {divide_by!r}")
        if len(mean) != len(std):
            raise InvalidModel("model metadata 'preprocessing' needs as many 'mean' as 'std' values")
        if any(s == 0 for s in (*std, divide_by)):
            raise InvalidModel("model metadata 'preprocessing' has a 'std' or 'divide_by' of 0")
        layout = str(value.get("layout", "NCHW")).upper()
        if layout not in LAYOUTS:
            raise InvalidModel(f"model metadata 'preprocessing' layout {layout!r}; expected NCHW | NHWC")
        return cls(mean, std, layout, float(divide_by))

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "NCHW" else 3

    def check_model_input(self, dtype: np.dtype, shape: tuple[int | None, ...] | None) -> None:
        """Refuse a declaration the model's input cannot honour (at load, not per request)."""
        if dtype != np.float32:
            raise InvalidModel(f"metadata 'preprocessing' needs an f32 model input, the model's is {dtype}")
        if shape is not None:
            channels = shape[self.channel_axis] if len(shape) == 4 else None
            if len(shape) != 4 or (channels is not None and len(self.mean) not in (1, channels)):
                raise InvalidModel(
                    f"metadata 'preprocessing' ({self.layout}, {len(self.mean)} channels) does not fit the "
                    f"model's input shape {list(shape)}"
                )

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` (uint8, the model's input shape) as the model's f32 input."""
        shape = [1, 1, 1, 1]
        shape[self.channel_axis] = len(self.mean)
        m = np.asarray(self.mean, dtype=np.float64)
        s = np.asarray(self.std, dtype=np.float64)
        scale = (1.0 / (self.divide_by * s)).astype(np.float32).reshape(shape)
        offset = (-m / s).astype(np.float32).reshape(shape)
        out = np.multiply(pixels, scale, dtype=np.float32)
        out += offset
        return out


def _factors(value: Mapping[str, Any], key: str) -> tuple[float, ...]:
    raw = value.get(key)
    if not isinstance(raw, list) or not raw or not all(_is_number(v) for v in raw):
        raise InvalidModel(f"model metadata 'preprocessing' needs {key!r}: a list of numbers, got {raw!r}")
    return tuple(float(v) for v in raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
