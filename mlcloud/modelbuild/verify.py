"""Check that built classifiers classify: the sanity gate of ``mlcloud models build``.

The preprocessing is the one DESIGN §3 gives the preprocess actor (RGB, bilinear resize to
224×224, /255, ImageNet mean/std, NCHW f32), repeated here so a model build does not depend on
an actor module. The expectations come from FACTS (chelsea → Egyptian cat ≈ 0.80, coffee →
espresso ≈ 0.86) and are checked with every engine installed, which must agree on the top-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mlcloud.modelbuild import efficientnet_lite0 as enet
from mlcloud.modelbuild.errors import VerificationError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

EGYPTIAN_CAT, TIGER_CAT, TABBY, ESPRESSO = 285, 282, 281, 967
CAT_CLASSES = frozenset({281, 282, 283, 284, 285, 286, 287})


@dataclass(frozen=True)
class Expectation:
    """Top-1 class of a photo and its minimum probability (FACTS value less a margin)."""

    image: str  # scikit-image data file stem
    committed: str  # the same photo in images/, used when scikit-image is not installed
    top1: int
    min_probability: float


EXPECTATIONS = (
    Expectation("chelsea", "cat.jpg", EGYPTIAN_CAT, 0.70),
    Expectation("coffee", "coffee.jpg", ESPRESSO, 0.75),
)

_IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"


def imagenet_tensor(image: Image.Image, size: int = enet.INPUT_SIZE) -> np.ndarray:
    """A PIL image → the [1,3,size,size] f32 tensor the ImageNet classifiers expect."""
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = (np.asarray(rgb, np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos by data-file stem (``chelsea``, ``coffee``…)."""
    from mlcloud.modelbuild.images import skimage_data_file

    return Image.open(skimage_data_file(name))


def _photo(exp: Expectation) -> Image.Image:
    # scikit-image is only needed to make images/; a machine that just builds models checks
    # against the committed JPEGs of the same photos instead.
    from mlcloud.modelbuild.errors import ModelBuildError

    try:
        return skimage_photo(exp.image)
    except ModelBuildError:
        if (_IMAGES_DIR / exp.committed).is_file():
            return Image.open(_IMAGES_DIR / exp.committed)
        raise


def top_k(probs: np.ndarray, k: int = 5) -> list[int]:
    return [int(i) for i in np.argsort(-probs, kind="stable")[:k]]


def check_classifier(
    path: str | Path, engines: list[str] | None = None
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Run every expectation on every engine; raise :class:`VerificationError` on a miss.

    Returns ``{engine: {image: [(class, probability), …top 5]}}`` for reporting.
    """
    engines = engines or enet.available_engines()
    report: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for engine in engines:
        run = enet.ENGINES[engine](Path(path))
        report[engine] = {}
        for exp in EXPECTATIONS:
            logits = run(imagenet_tensor(_photo(exp))).reshape(-1).astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            top = top_k(probs)
            report[engine][exp.image] = [(i, float(probs[i])) for i in top]
            if top[0] != exp.top1 or probs[exp.top1] < exp.min_probability:
                raise VerificationError(
                    f"{engine}: {exp.image} gave class {top[0]} ({probs[top[0]]:.3f}), "
                    f"expected {exp.top1} with p >= {exp.min_probability}"
                )
    tops = {e: {img: [c for c, _ in r] for img, r in res.items()} for e, res in report.items()}
    if len({repr(t) for t in tops.values()}) > 1:
        raise VerificationError(f"engines disagree on the top-5: {tops}")
    return report


# The committed JPEGs must still classify after re-encoding: (file, acceptable top-1 classes).
PHOTO_EXPECTATIONS: tuple[tuple[str, frozenset[int]], ...] = (
    ("cat.jpg", CAT_CLASSES),
    ("coffee.jpg", frozenset({ESPRESSO})),
)


def check_photos(
    model: str | Path, images_dir: str | Path, engine: str = "onnxruntime"
) -> dict[str, tuple[int, float]]:
    """Top-1 (class, probability) of each checked photo; raise if one is not what it shows."""
    run = enet.ENGINES[engine](Path(model))
    found: dict[str, tuple[int, float]] = {}
    for filename, allowed in PHOTO_EXPECTATIONS:
        with Image.open(Path(images_dir) / filename) as im:
            logits = run(imagenet_tensor(im)).reshape(-1).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = int(np.argmax(probs))
        found[filename] = (top, float(probs[top]))
        if top not in allowed:
            raise VerificationError(
                f"{filename} classified as {top} ({probs[top]:.3f}), expected one of {sorted(allowed)}"
            )
    return found
