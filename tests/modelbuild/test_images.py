"""The committed photos exist, are what the README says, and still classify."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mlcloud.modelbuild import images, verify

from .conftest import IMAGES


def test_every_photo_is_committed_and_documented():
    readme = (IMAGES / "README.md").read_text()
    for photo in images.PHOTOS:
        path = IMAGES / photo.filename
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert max(im.size) <= 1024
        assert path.stat().st_size < 200_000
        assert f"`{photo.filename}`" in readme


def test_encoding_is_deterministic():
    photo = images.PHOTOS[0]
    assert images.encode(photo) == images.encode(photo)


def test_write_photos_leaves_identical_files_alone(tmp_path: Path):
    first = images.write_photos(tmp_path)
    assert all(changed for _, changed in first)
    mtimes = {p: p.stat().st_mtime_ns for p, _ in first}
    second = images.write_photos(tmp_path)
    assert not any(changed for _, changed in second)
    assert {p: p.stat().st_mtime_ns for p, _ in second} == mtimes


def test_cat_is_a_cat_and_coffee_is_espresso(enet_onnx: Path):
    found = verify.check_photos(enet_onnx, IMAGES)
    assert found["cat.jpg"][0] == verify.EGYPTIAN_CAT and found["cat.jpg"][1] > 0.7
    assert found["coffee.jpg"][0] == verify.ESPRESSO and found["coffee.jpg"][1] > 0.7
