"""deploy/coral/python.sh: which Python install.sh builds the board's venv with.

The system's when it meets pyproject.toml's requires-python; otherwise (the Coral Dev Board's
Mendel 5 ships 3.7) a standalone CPython in PREFIX/python, from an offline bundle or through uv.
A stand-in for Mendel's python3 reports 3.7.3 and has no pip; a stand-in for the bundle's
python-build-standalone archive has its layout (python/bin/python3) and runs this machine's Python.
The real archive on an emulated board: tests/aarch64 (`make test-aarch64`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from .conftest import PROJECT

PYTHON_SH = PROJECT / "deploy" / "coral" / "python.sh"
MIN_PYTHON = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"].removeprefix(">=")


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def old_python(path: Path, *, pip: bool) -> Path:
    """python3 as python.sh sees Mendel 5's: 3.7.3; ``-m pip`` is this machine's pip, or missing."""
    module = f'exec {sys.executable} "$@"' if pip else 'echo "python3.7: No module named $2" >&2; exit 1'
    return script(path, f"""#!/bin/sh
case "$1" in
    -c) exec {sys.executable} -c "import sys, platform
sys.version_info = (3, 7, 3, 'final', 0)
platform.python_version = lambda: '3.7.3'
$2" ;;
    -m) {module} ;;
esac
exit 2
""")


@pytest.fixture
def mendel_python(tmp_path: Path) -> Path:
    return old_python(tmp_path / "python3.7", pip=False)


def bundle_with_python(root: Path) -> Path:
    """A bundle's python/ with an archive of python-build-standalone's layout (top directory python/)."""
    staging = root / "staging"
    (staging / "python" / "bin").mkdir(parents=True)
    script(staging / "python" / "bin" / "python3", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (root / "bundle" / "python").mkdir(parents=True)
    with tarfile.open(root / "bundle" / "python" / "cpython-3.11.9-aarch64-unknown-linux-gnu-install_only.tar.gz",
                      "w:gz") as tar:
        tar.add(staging / "python", arcname="python")
    return root / "bundle"


def python_sh(prefix: Path, *bundle: Path, python: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(python), "PATH": "/usr/bin:/bin"}  # no uv on PATH
    return subprocess.run([str(PYTHON_SH), str(prefix), *map(str, bundle)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_new_enough_system_python_is_used_as_it_is(tmp_path: Path) -> None:
    result = python_sh(tmp_path / "opt", python=sys.executable)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable and not (tmp_path / "opt" / "python").exists()


def test_the_minimum_is_read_from_pyproject_toml(tmp_path: Path) -> None:
    """One source of truth: a checkout whose pyproject.toml asks for 3.99 finds this Python too old."""
    (tmp_path / "deploy" / "coral").mkdir(parents=True)
    copy = script(tmp_path / "deploy" / "coral" / "python.sh", PYTHON_SH.read_text())
    (tmp_path / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.99"\n')
    (tmp_path / "bundle").mkdir()
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run([str(copy), str(tmp_path / "opt"), str(tmp_path / "bundle")], capture_output=True,
                            text=True, env=env, timeout=60)
    version = ".".join(map(str, sys.version_info[:3]))
    assert result.returncode == 1 and f"{sys.executable} is {version}, older than 3.99" in result.stderr


def test_a_too_old_python_with_a_bundle_gets_the_bundles_standalone_cpython(
    tmp_path: Path, mendel_python: Path
) -> None:
    bundle, prefix = bundle_with_python(tmp_path), tmp_path / "opt"
    result = python_sh(prefix, bundle, python=mendel_python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(prefix / "python" / "bin" / "python3")
    assert f"is 3.7.3, older than {MIN_PYTHON}: unpacking the bundle's cpython-3.11.9-" in result.stderr
    # A second run (install.sh upgrading) keeps the one it installed.
    again = python_sh(prefix, python=mendel_python)
    assert again.returncode == 0 and again.stdout == result.stdout and "installed earlier" in again.stderr


def test_a_bundle_without_python_says_to_make_it_again(tmp_path: Path, mendel_python: Path) -> None:
    (tmp_path / "bundle" / "wheels").mkdir(parents=True)
    result = python_sh(tmp_path / "opt", tmp_path / "bundle", python=mendel_python)
    assert result.returncode == 1 and result.stdout == ""
    assert f"is 3.7.3, older than {MIN_PYTHON}, and the bundle" in result.stderr
    assert "has no python/*.tar.gz: make it again with deploy/coral/bundle.sh" in result.stderr


def test_a_too_old_python_without_uv_or_pip_points_to_the_offline_bundle(tmp_path: Path, mendel_python: Path) -> None:
    result = python_sh(tmp_path / "opt", python=mendel_python)
    assert result.returncode == 1 and result.stdout == ""
    assert f"is 3.7.3, older than {MIN_PYTHON}: installing a standalone CPython {MIN_PYTHON} with uv" in result.stderr
    assert "could not install uv with" in result.stderr
    assert "make an offline bundle on the development machine (deploy/coral/bundle.sh)" in result.stderr


def test_no_python_at_all_is_said_too(tmp_path: Path) -> None:
    result = python_sh(tmp_path / "opt", tmp_path, python=tmp_path / "python3")
    assert result.returncode == 1 and "is missing, older than" not in result.stdout
    assert f"{tmp_path / 'python3'} is missing, older than {MIN_PYTHON}" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_online_a_too_old_python_gets_uv_through_pip_and_says_when_the_download_fails(tmp_path: Path) -> None:
    """The online path up to the download: uv comes from the package index into PREFIX/uv, then
    `uv python install` is pointed at a mirror that does not exist (this machine reaches no
    download site; one that does would succeed), so the message for a board without internet shows."""
    prefix = tmp_path / "opt"
    env = {**os.environ, "PYTHON": str(old_python(tmp_path / "python3.7", pip=True)), "PATH": "/usr/bin:/bin",
           "UV_PYTHON_INSTALL_MIRROR": (tmp_path / "no-mirror").as_uri(), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    result = subprocess.run([str(PYTHON_SH), str(prefix)], capture_output=True, text=True, env=env, timeout=280)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert "no uv here: installing it from the package index" in result.stderr
    assert (prefix / "uv" / "bin" / "uv").is_file()
    assert f"uv could not download CPython {MIN_PYTHON} (python-build-standalone); without internet, make an " \
        "offline bundle" in result.stderr


def test_install_sh_refuses_a_folder_that_is_no_bundle(tmp_path: Path) -> None:
    result = subprocess.run([str(PROJECT / "deploy" / "coral" / "install.sh"), "--bundle", str(tmp_path),
                             "--dev", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"--bundle {tmp_path} has no wheels/: make it with deploy/coral/bundle.sh" in result.stderr
