"""Fixtures of the inference tests: tiny model files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from .models import onnx_model, plus3_graphdef


@pytest.fixture
def identity_path(tmp_path: Path) -> Path:
    return onnx_model(tmp_path / "identity.onnx")


@pytest.fixture
def plus3_path(tmp_path: Path) -> Path:
    return plus3_graphdef(tmp_path / "plus3.pb")
