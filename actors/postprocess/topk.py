"""Model output tensor → the k most likely labels: the pure logic of the postprocess actor.

The actor glue (lattice, PostprocessRequest decoding, reading ``synset.txt`` once at start-up)
lives elsewhere and calls :func:`load_labels` once and :func:`top_k` per request; nothing here
touches NATS. The answer keeps the original project's JSON shape,
``[{"label": "n02123045 tabby, tabby cat", "probability": 0.39}, …]``, most likely first.

Decisions:

* **Labels** are whole ``synset.txt`` lines (``"wnid names"``), as the original returned them.
* **Shapes**: any output with exactly one axis longer than 1 — ``[1, 1000]``, ``[1, 1000, 1, 1]``
  (SqueezeNet), ``[1000]``. One more class than labels (1001, TF-slim and Coral models) means
  class 0 is "background"; it is dropped so the rest line up with ``synset.txt``.
* **Softmax** (``softmax="auto"``, the default) is applied unless the output already is a
  probability distribution (every value in [0, 1], sum within 1e-3 of 1): models that end in a
  Softmax node must not be squashed a second time (that flattens 0.8 to ~0.002). Logits of a
  1000-class model never pass that test by accident. ``True``/``False`` force it either way.
  The softmax is numerically stable (max subtracted) and computed in float64.
* **Non-finite outputs** (NaN, ±inf) are a broken model or input, not a ranking: 500
  ``RuntimeError`` rather than NaN in JSON. Integer outputs are ranked as scores; dequantising a
  quantised model's output needs its scale and zero point, which only the inference provider
  knows.
* **k** must be a whole number in 1..classes (``?top=k`` arrives as text): 400 ``RequestError``.
* **Speed**: ``argpartition`` picks the k best in O(n), only those k are sorted (ties broken by
  class index, so answers are deterministic).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from mlcloud.errors import ConfigError, CorruptInputTensor, InferenceRuntimeError, RequestError
from mlcloud.interfaces import Match, PostprocessRequest, Tensor

DEFAULT_TOP = 5
# How far from 1 a sum may be and still count as "already probabilities" (float16 outputs of
# 1000 classes sum to 1 within ~1e-4).
_PROBABILITY_SUM_TOLERANCE = 1e-3


def parse_synset(text: str | bytes | Iterable[str]) -> list[str]:
    """Labels from ``synset.txt`` content: one ``"wnid names"`` line per class, in class order.

    Line ends (``\\n`` or ``\\r\\n``) are stripped; trailing blank lines are ignored; a blank
    line between labels is a broken file (the classes after it would be off by one).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    lines = text.splitlines() if isinstance(text, str) else [line.rstrip("\r\n") for line in text]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ConfigError("synset has no labels")
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise ConfigError(f"synset has a blank line at line {blank[0] + 1}; labels would shift")
    return lines


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read and parse a ``synset.txt`` file (see :func:`parse_synset`)."""
    try:
        with open(path, "rb") as f:
            return parse_synset(f.read())
    except OSError as exc:
        raise ConfigError(f"cannot read labels from {os.fspath(path)}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"labels file {os.fspath(path)} is not UTF-8: {exc}") from exc


def softmax(scores: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D array, in float64."""
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    e /= e.sum()
    return e


def is_probability(values: np.ndarray) -> bool:
    """True when ``values`` already is a distribution: all in [0, 1], summing to ~1."""
    v = np.asarray(values, dtype=np.float64)
    return bool(
        v.size
        and v.min() >= 0.0
        and v.max() <= 1.0
        and abs(v.sum() - 1.0) <= _PROBABILITY_SUM_TOLERANCE
    )


def validate_k(k: int | str | None, classes: int) -> int:
    """``k`` as an int in 1..classes; ``None`` or ``""`` mean :data:`DEFAULT_TOP` (capped at
    ``classes``). Raises RequestError (400) otherwise."""
    if k is None or (isinstance(k, str) and not k.strip()):
        return min(DEFAULT_TOP, classes)
    if isinstance(k, bool) or not isinstance(k, (int, str, np.integer)):
        raise RequestError(f"top must be a whole number from 1 to {classes}, got {k!r}")
    if isinstance(k, str):
        text = k.strip()
        if not text.isascii() or not text.lstrip("+").isdigit():
            raise RequestError(f"top must be a whole number from 1 to {classes}, got {k!r}")
        k = int(text)
    k = int(k)
    if not 1 <= k <= classes:
        raise RequestError(f"top must be from 1 to {classes}, got {k}")
    return k


def class_scores(output: Tensor | np.ndarray, classes: int) -> np.ndarray:
    """The model output as a 1-D float array of ``classes`` scores (see the module docstring
    for accepted shapes). Raises CorruptInputTensor (400) on shapes or types it cannot rank."""
    array = output.to_numpy() if isinstance(output, Tensor) else np.asarray(output)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise CorruptInputTensor(f"cannot rank a model output of type {array.dtype}")
    long_axes = [n for n in array.shape if n != 1]
    if len(long_axes) > 1:
        raise CorruptInputTensor(
            f"expected one row of class scores, got a model output of shape {list(array.shape)}"
        )
    scores = array.reshape(-1)
    if scores.size == classes + 1:
        scores = scores[1:]  # class 0 is "background" in 1001-class models
    elif scores.size != classes:
        raise CorruptInputTensor(
            f"model output has {scores.size} classes but the labels name {classes}"
        )
    return scores


def top_k(
    output: Tensor | np.ndarray,
    labels: Sequence[str],
    k: int | str | None = DEFAULT_TOP,
    *,
    softmax: bool | Literal["auto"] = "auto",
) -> list[Match]:
    """The ``k`` most likely labels of a classifier output, most likely first.

    Raises RequestError (bad ``k``), CorruptInputTensor (shape/type), InferenceRuntimeError
    (NaN or infinite scores).
    """
    classes = len(labels)
    k = validate_k(k, classes)
    scores = class_scores(output, classes)
    if np.issubdtype(scores.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(scores))
        if bad:
            raise InferenceRuntimeError(
                f"model output has {bad} non-finite (NaN or infinite) values of {scores.size}"
            )
    if softmax == "auto":
        apply = not is_probability(scores)
    else:
        apply = bool(softmax)
    probs = _softmax(scores) if apply else np.asarray(scores, dtype=np.float64)

    if k < probs.size:
        best = np.argpartition(-probs, k - 1)[:k]
    else:
        best = np.arange(probs.size)
    # Sort the k by probability, descending; equal probabilities by class index.
    best = best[np.lexsort((best, -probs[best]))]
    return [Match(label=labels[i], probability=float(probs[i])) for i in best]


_softmax = softmax  # top_k's keyword argument shadows the function's name


def matches(request: PostprocessRequest, labels: Sequence[str]) -> list[Match]:
    """The postprocess actor's operation: a ``PostprocessRequest`` → its top matches."""
    return top_k(request.tensor, labels, request.top)


def to_json(found: Iterable[Match]) -> list[dict[str, object]]:
    """The original JSON shape: ``[{"label": …, "probability": …}, …]``."""
    return [{"label": m.label, "probability": m.probability} for m in found]
