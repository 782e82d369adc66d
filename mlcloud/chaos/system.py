"""The system under chaos: ``mlcloud up`` with the default app, and what its processes are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import yaml

from mlcloud.bench.monitor import process_name
from mlcloud.servers import free_port
from mlcloud.testing.stack import APP_MANIFEST, PROJECT_DIR, build_models

ACTORS = ("api", "preprocess", "postprocess")
PROVIDERS = ("mlinference", "httpserver")
SERVERS = {"nats-server": "nats-server", "registry": "docker-registry"}  # target → its process's name
TARGETS = (*ACTORS, *PROVIDERS, *SERVERS)


def clock() -> float:
    return time.monotonic()


def monotonic_of(epoch: float) -> float:
    """An epoch time (psutil's create_time) on the monotonic clock."""
    return epoch - (time.time() - time.monotonic())


class UpProcess:
    """``mlcloud up --no-washboard --app MANIFEST`` in its own process group, on free ports.

    The manifest is deploy/app.yaml with ``replicas`` instances of each actor. Output goes to
    ``state_dir/up.log``. Use it as a context manager: the exit asks it to stop (SIGINT), then kills.
    """

    def __init__(self, state_dir: Path, *, replicas: int = 1, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.replicas = replicas
        self.lattice = f"chaos-{uuid.uuid4().hex[:8]}"
        self.nats_port = free_port()
        self.http_url = f"http://127.0.0.1:{free_port()}"
        self.registry = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            **(env or {}),
            "MLCLOUD_STATE_DIR": str(state_dir),
            "MLCLOUD_NATS_PORT": str(self.nats_port),
            "MLCLOUD_NATS_URL": "",
            "MLCLOUD_BINDLE_ADDRESS": f"127.0.0.1:{free_port()}",
            "MLCLOUD_REGISTRY": self.registry,
            "MLCLOUD_HTTP_ADDRESS": urlsplit(self.http_url).netloc,
            "MLCLOUD_LATTICE": self.lattice,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def ctl_creds(self) -> Path:
        return self.state_dir / "nats-auth" / "ctl.creds"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "up.log"

    def manifest(self) -> Path:
        app = yaml.safe_load(APP_MANIFEST.read_text())
        for component in app["spec"]["components"]:
            if component["type"] == "actor":
                for trait in component.get("traits", []):
                    if trait["type"] == "spreadscaler":
                        trait["properties"]["replicas"] = self.replicas
        path = self.state_dir / "app.yaml"
        path.write_text(yaml.safe_dump(app, sort_keys=False))
        return path

    def start(self, timeout: float = 180.0) -> None:
        build_models()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlcloud.cli", "up", "--no-washboard", "--app", str(manifest)],
                env=self.env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = clock() + timeout
        while b"mlcloud is up" not in self.log_path.read_bytes():
            if self.process.poll() is not None or clock() > deadline:
                raise RuntimeError(f"mlcloud up did not come up; its output:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        while self._status("/v2/health/ready") != 200:
            if clock() > deadline:
                raise RuntimeError(f"{self.http_url} is not ready; mlcloud up's output:\n"
                                   f"{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> UpProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _status(self, path: str, base: str | None = None) -> int | None:
        try:
            with urllib.request.urlopen(f"{base or self.http_url}{path}", timeout=1.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return None

    def registry_answers(self) -> bool:
        return self._status("/v2/", f"http://{self.registry}") == 200

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The system's processes by what they are (:data:`TARGETS`, ``mlcloud`` for up itself, …)."""
        assert self.process is not None
        found: dict[str, list[psutil.Process]] = {}
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return found
        names = {process: target for target, process in SERVERS.items()}
        for proc in tree:
            try:
                name = "mlcloud" if proc.pid == root.pid else process_name(proc)
            except psutil.Error:
                continue
            found.setdefault(names.get(name, name), []).append(proc)
        return found
