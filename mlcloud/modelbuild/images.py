"""Make the committed test photos in ``images/`` from the photos that ship in wheels.

scikit-image and matplotlib carry a few real, freely licensed photographs (see
``images/README.md`` for each one's source and licence). They are re-encoded as baseline JPEG at
quality 90 without metadata, at their original size, so the files are small, identical on every
run with the same Pillow/libjpeg, and exercise the JPEG path of the preprocess actor.

The package files are located with ``importlib.util.find_spec`` so neither scikit-image nor
matplotlib has to be imported (both are slow to import and only their data files are needed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mlcloud.modelbuild.errors import ModelBuildError

JPEG_QUALITY = 90


@dataclass(frozen=True)
class Photo:
    """One committed photo: the file we write and where it comes from."""

    filename: str
    package: str
    relpath: str  # inside the package directory


PHOTOS: tuple[Photo, ...] = (
    Photo("cat.jpg", "skimage", "data/chelsea.png"),
    Photo("coffee.jpg", "skimage", "data/coffee.png"),
    Photo("rocket.jpg", "skimage", "data/rocket.jpg"),
    Photo("motorcycle.jpg", "skimage", "data/motorcycle_left.png"),
    Photo("grace_hopper.jpg", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError(f"{package} is not installed; it provides the test photos")
    return Path(next(iter(spec.submodule_search_locations)))


def source_path(photo: Photo) -> Path:
    path = package_dir(photo.package) / photo.relpath
    if not path.is_file():
        raise ModelBuildError(f"{path} is missing from the installed {photo.package}")
    return path


def skimage_data_file(stem: str) -> Path:
    """``skimage/data/{stem}.png`` (or .jpg) of the installed scikit-image."""
    data = package_dir("skimage") / "data"
    for suffix in (".png", ".jpg"):
        if (data / f"{stem}{suffix}").is_file():
            return data / f"{stem}{suffix}"
    raise ModelBuildError(f"scikit-image has no data file {stem}")


def encode(photo: Photo) -> bytes:
    """The JPEG bytes of one photo (RGB, quality 90, no EXIF/ICC, not progressive)."""
    import io

    with Image.open(source_path(photo)) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def write_photos(out: str | Path) -> list[tuple[Path, bool]]:
    """Write every photo under ``out``; returns ``(path, changed)`` per photo.

    A file whose bytes are already right is not rewritten, so the working tree stays clean.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for photo in PHOTOS:
        data = encode(photo)
        path = out / photo.filename
        changed = not (path.is_file() and path.read_bytes() == data)
        if changed:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        results.append((path, changed))
    return results
