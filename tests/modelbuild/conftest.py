"""Fixtures for the model build tests: the expensive outputs are built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlcloud.modelbuild import bundles, efficientnet_lite0

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
IMAGES = REPO / "images"


@pytest.fixture(scope="session")
def enet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 converted once for the whole session (~0.4 s)."""
    return efficientnet_lite0.build(tmp_path_factory.mktemp("enet") / "efficientnet-lite0.onnx")


@pytest.fixture(scope="session")
def built_tree(tmp_path_factory: pytest.TempPathFactory, enet_onnx: Path) -> Path:
    """Every buildable bundle of the committed models/, built once (classifier check skipped:
    test_efficientnet checks the same model on its own)."""
    out = tmp_path_factory.mktemp("build")
    bundles.build_all(MODELS, out, verify=False)
    return out


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A private copy of models/ (without build/) a test may edit."""
    dest = tmp_path / "models"
    shutil.copytree(MODELS, dest, ignore=shutil.ignore_patterns("build"))
    return dest


@pytest.fixture
def build_copy(tmp_path: Path, built_tree: Path) -> Path:
    """A private copy of the session's build output a test may rebuild."""
    dest = tmp_path / "build"
    shutil.copytree(built_tree, dest)
    return dest
