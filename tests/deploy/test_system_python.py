"""The README's curl under the distribution's own Python, not only under the newer one of the suite.

Debian 12 and Raspberry Pi OS bookworm ship Python 3.11.2, which lacks features that arrived in
later 3.11 releases (tar extraction filters: 3.11.4). The suite's own venv may run a newer 3.11,
so this test makes a second venv with ``/usr/bin/python3`` (as a user who follows the README on
a stock Debian 12 gets), runs ``mlcloud up --app deploy/app.yaml`` in it and sends the cat photo.
The venv is kept (``.venv-system-python``, rebuilt when pyproject.toml changes) so that reruns
take seconds rather than a minute of installing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from mlcloud.servers import free_port
from mlcloud.testing.stack import build_models

from .conftest import PROJECT, clean_environ, stop_process_group, wait_until

SYSTEM_PYTHON = Path("/usr/bin/python3")
VENV = PROJECT / ".venv-system-python"
CAT_LABELS = {"n02124075 Egyptian cat", "n02123045 tabby, tabby cat", "n02123159 tiger cat"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason=f"{SYSTEM_PYTHON} does not exist on this machine"),
]


def _run(*args: str | Path, timeout: float = 600) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, cwd=PROJECT)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def system_venv() -> Path:
    """A venv of the system Python with mlcloud installed (editable) and pytest, built once."""
    version = _run(SYSTEM_PYTHON, "-c", "import sys; print(sys.version)")
    # The extras the default app needs (tf: plus3 is a TF1 graph), as `make run` installs them.
    packages = [f"{PROJECT}[tf]", "pytest>=8", "pytest-asyncio>=0.23", "pytest-timeout>=2.2"]
    wanted = (PROJECT / "pyproject.toml").read_bytes() + repr((version, packages)).encode()
    stamp_text = hashlib.sha256(wanted).hexdigest()
    stamp = VENV / ".installed"
    if not (stamp.exists() and stamp.read_text() == stamp_text):
        shutil.rmtree(VENV, ignore_errors=True)
        _run(SYSTEM_PYTHON, "-m", "venv", VENV)
        _run(VENV / "bin" / "python", "-m", "pip", "install", "-q", "-e", *packages)
        stamp.write_text(stamp_text)
    return VENV


@pytest.mark.timeout(600)
def test_tar_extraction_is_safe_on_the_system_python(system_venv: Path) -> None:
    """The unpacker's own tests, run by the system Python's tarfile (filters or not)."""
    out = _run(system_venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/oci/test_unpack.py")
    assert " passed" in out and "failed" not in out, out


@pytest.mark.timeout(600)
def test_readme_curl_answers_under_the_system_python(system_venv: Path, tmp_path: Path) -> None:
    build_models()  # the model bundles are built by the suite's venv, which has the `models` extra
    http = f"127.0.0.1:{free_port()}"
    env = {
        **clean_environ(),
        "MLCLOUD_STATE_DIR": str(tmp_path / "state"),
        "MLCLOUD_LATTICE": f"syspy-{uuid.uuid4().hex[:8]}",
        "MLCLOUD_NATS_PORT": str(free_port()),
        "MLCLOUD_BINDLE_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_REGISTRY": f"127.0.0.1:{free_port()}",
        "MLCLOUD_HTTP_ADDRESS": http,
        "MLCLOUD_WASHBOARD_ADDRESS": f"127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen([str(system_venv / "bin" / "mlcloud"), "up", "--app", "deploy/app.yaml"], env=env,
                              cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        def ready() -> bool:
            assert up.poll() is None, f"mlcloud up exited with {up.returncode}:\n{log.read_text()}"
            try:
                return httpx.get(f"http://{http}/v2/health/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=240, what=f"the app to be ready under {SYSTEM_PYTHON}", interval=0.5)
        response = httpx.put(f"http://{http}/mobilenetv27/matches",
                             content=(PROJECT / "images" / "cat.jpg").read_bytes(), timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()[0]["label"] in CAT_LABELS
        assert "Traceback" not in log.read_text()
    finally:
        stop_process_group(up)
    # Every part ran under the system Python: the host's instances are started with its sys.executable.
    assert str(system_venv) != str(Path(sys.executable).parent.parent)
