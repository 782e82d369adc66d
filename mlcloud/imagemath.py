"""The arithmetic that turns 8-bit (or [0, 1]) pixels into a model's normalised input, in one place.

Shared by the preprocess actor (which normalises when it sends f32) and the mlinference
provider (which normalises the 8-bit pixels it is sent, :mod:`mlcloud.inference.pixels`), so
that an image gives the same f32 tensor bit for bit whichever side does it: the factors are
computed in f64 and rounded once, then the pixels take one multiply and one add in the output
dtype. Only numpy here: the actor processes import it.
"""

from __future__ import annotations

import functools

import numpy as np

from mlcloud.errors import ConfigError


@functools.lru_cache(maxsize=64)
def affine(
    mean: tuple[float, ...], std: tuple[float, ...], channels: int, unit: float, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``scale``, ``offset``: ``(pixel/unit - mean)/std == pixel*scale + offset``.

    A grey (one-channel) input of a model described with three means and stds takes their
    averages; a one-value description applies to every channel.
    """
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ConfigError(f"mean and std need 1 or 3 values each, got {mean} and {std}")
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if not np.all(np.isfinite(m)) or not np.all(np.isfinite(s)) or np.any(s == 0):
        raise ConfigError(f"mean and std must be finite and std non-zero, got {mean} and {std}")
    if channels == 1 and len(m) == 3:
        m, s = m.mean(keepdims=True), s.mean(keepdims=True)
    elif channels == 3 and len(m) == 1:
        m, s = np.repeat(m, 3), np.repeat(s, 3)
    scale = (1.0 / (unit * s)).astype(dtype)
    offset = (-m / s).astype(dtype)
    scale.setflags(write=False)
    offset.setflags(write=False)
    return scale, offset
