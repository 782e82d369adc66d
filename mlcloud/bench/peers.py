"""Framework peers in the bench (``mlcloud bench --peers mlserver,bentoml``; off by default).

Each peer is installed from the package index into a venv of its own under the state dir
(``<state dir>/bench-peers/<name>-<version>``, made once and reused), so its dependencies never
touch mlcloud's. It serves the same pipeline from the same files as the limit and the naive
server (:func:`mlcloud.bench.workload.peer_pipeline`: the preprocess actor's ``imaging.py``, the
built EfficientNet-Lite0, the postprocess actor's ``topk.py``) the way that framework's user
writes it, with onnxruntime's default session:

* **MLServer** 1.7.1: a custom runtime (:mod:`mlcloud.bench.peer_mlserver`) behind MLServer's
  Open Inference Protocol endpoint; the photo travels base64 in a ``BYTES`` input, MLServer's
  REST form of binary data. MLServer's defaults otherwise (one inference worker process).
* **BentoML** 1.4.40: a service (:mod:`mlcloud.bench.peer_bentoml`) with one synchronous API,
  the photo base64 in a JSON field; BentoML's defaults otherwise (one worker).

The bench then measures them in the same rounds as the other systems.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

from mlcloud.servers import free_port

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parents[1]
# What each peer's venv gets. MLServer 1.7.1's inference worker calls asyncio.get_event_loop()
# outside a loop, which uvloop 0.22 and later refuse: the worker dies at start-up with them.
PEER_SPECS = {"mlserver": ("mlserver==1.7.1", "uvloop<0.22"), "bentoml": ("bentoml==1.4.40",)}
PEER_NAMES = tuple(PEER_SPECS)
# The pipeline's own libraries, at the versions mlcloud runs (unpinned if the peer wants others).
PIPELINE_PACKAGES = ("onnxruntime", "numpy", "pillow", "msgspec")
MODEL_NAME = "efficientnet-lite0"
START_TIMEOUT = 180.0
INSTALL_TIMEOUT = 1800.0


class PeerError(RuntimeError):
    """A peer could not be installed or started (the message says which and where its log is)."""


@dataclass
class Peer:
    name: str
    pid: int
    url: str
    path: str  # where a photo is sent
    request: Callable[[bytes], tuple[str, bytes]]  # a photo → (content type, body)


def peer_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "bench-peers" / PEER_SPECS[name][0].replace("==", "-")


def ensure_venv(name: str, state_dir: Path, say: Callable[[str], None]) -> Path:
    """The python of the peer's own venv, made and installed on first use."""
    if name not in PEER_SPECS:
        raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")
    venv = peer_dir(state_dir, name)
    python = venv / "bin" / "python"
    done = venv / ".installed"
    wanted = list(PEER_SPECS[name])
    if done.exists() and done.read_text() == " ".join(wanted):
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    say(f"  {name}: installing {' '.join(wanted)} into {venv} (takes minutes the first time)")
    log = venv.parent / f"{venv.name}-install.log"
    pinned = [f"{p}=={metadata.version(p)}" for p in PIPELINE_PACKAGES]
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out)
        for extra in (pinned, list(PIPELINE_PACKAGES)):
            result = subprocess.run([str(python), "-m", "pip", "install", *wanted, *extra], stdout=out,
                                    stderr=out, timeout=INSTALL_TIMEOUT)
            if result.returncode == 0:
                break
        else:
            raise PeerError(f"could not install {' '.join(wanted)}: see {log}")
    done.write_text(" ".join(wanted))
    return python


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def mlserver_request(image: bytes) -> tuple[str, bytes]:
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [_b64(image)]}]}
    return "application/json", json.dumps(body).encode()


def bentoml_request(image: bytes) -> tuple[str, bytes]:
    return "application/json", json.dumps({"image": _b64(image)}).encode()


def _mlserver(python: Path, work: Path, port: int) -> tuple[list[str], Path, str, str]:
    folder = work / "mlserver"
    model = folder / MODEL_NAME
    model.mkdir(parents=True, exist_ok=True)
    for module in ("peer_mlserver.py", "peer_pipeline.py"):
        shutil.copy(HERE / module, model / module)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}))
    (model / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "peer_mlserver.Classifier"}))
    return ([str(python.parent / "mlserver"), "start", str(folder)], model, f"/v2/models/{MODEL_NAME}/ready",
            f"/v2/models/{MODEL_NAME}/infer")


def _bentoml(python: Path, work: Path, port: int) -> tuple[list[str], Path, str, str]:
    folder = work / "bentoml"
    folder.mkdir(parents=True, exist_ok=True)
    for module in ("peer_bentoml.py", "peer_pipeline.py"):
        shutil.copy(HERE / module, folder / module)
    return ([str(python.parent / "bentoml"), "serve", "peer_bentoml:Classifier", "--host", "127.0.0.1",
             "--port", str(port)], folder, "/readyz", "/matches")


STARTERS = {"mlserver": (_mlserver, mlserver_request), "bentoml": (_bentoml, bentoml_request)}


@contextlib.contextmanager
def serving(name: str, state_dir: Path, build_dir: Path, work: Path,
            say: Callable[[str], None]) -> Iterator[Peer]:
    """Install (once) and start the peer; stop it after (TERM, then KILL its process group)."""
    python = ensure_venv(name, state_dir, say)
    start, request = STARTERS[name]
    port = free_port()
    argv, cwd, ready, path = start(python, work, port)
    # The peer's own folder (its module, peer_pipeline) and the project (mlcloud.errors and
    # mlcloud.interfaces, which the preprocess actor's imaging.py imports).
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{PROJECT_DIR}", "MLCLOUD_BENCH_PROJECT": str(PROJECT_DIR),
           "MLCLOUD_BENCH_BUILD_DIR": str(build_dir), "BENTOML_DO_NOT_TRACK": "True",
           "VIRTUAL_ENV": str(python.parent.parent), "PATH": f"{python.parent}:{os.environ.get('PATH', '')}"}
    log = work / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url + ready, name, log)
        say(f"  {name} ready at {url}")
        yield Peer(name, proc.pid, url, path, request)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"{name} exited ({proc.returncode}) before it was ready: see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise PeerError(f"{name} was not ready within {START_TIMEOUT:g} s: see {log}")


def _stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
