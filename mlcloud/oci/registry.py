"""The embedded OCI registry: Debian's ``docker-registry`` (CNCF distribution) as a child process.

mlcloud never uses the packaged ``/etc/docker/registry/config.yml`` (it listens on every
interface and turns on htpasswd auth); it writes its own config under the state dir::

    <state_dir>/registry/config.yml     loopback only, no auth, deletes allowed, log level warn
    <state_dir>/registry/storage/       the blobs and manifests
    <state_dir>/registry/registry.log   the child's stdout and stderr

``EmbeddedRegistry`` is a context manager both ways: ``with`` for tests and scripts,
``async with`` for the host (start and stop then run in a worker thread). Port 0 (tests) lets the
registry bind a free port itself; it is read back from the registry's ``listening on`` log line
(logged at level info, so that level is used then), so nothing can take it between choice and bind.
``mlcloud up`` supervises it (:mod:`mlcloud.server_supervisor`): :meth:`EmbeddedRegistry.restart`
starts a dead registry again on the same port and storage.
"""

from __future__ import annotations

import asyncio
import enum
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from mlcloud.errors import PortInUse
from mlcloud.oci.errors import RegistryNotInstalled, RegistryStartFailed
from mlcloud.servers import port_is_free
from mlcloud.settings import Settings, split_address

BINARY_NAME = "docker-registry"
_FALLBACK_PATHS = ("/usr/bin/docker-registry", "/usr/sbin/docker-registry")
DEFAULT_START_TIMEOUT = 15.0
EXIT_POLL_INTERVAL = 0.1  # seconds between looks at whether a supervised registry still runs
_LISTENING = re.compile(rb'msg="listening on [^"]*:(\d+)"')


class RegistryState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


def find_registry_binary() -> Path:
    """The ``docker-registry`` executable, or a RegistryNotInstalled that says how to get it."""
    found = shutil.which(BINARY_NAME)
    if found:
        return Path(found)
    # PATH in services and sudo sessions often lacks /usr/sbin; look where Debian puts it.
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise RegistryNotInstalled(
        f"{BINARY_NAME} not found on PATH: install it with `apt-get install -y docker-registry` "
        "or point --registry at a running OCI registry"
    )


def registry_config(storage: Path, host: str, port: int) -> dict[str, Any]:
    return {
        "version": 0.1,
        # Port 0 needs the info line that says which port the registry got.
        "log": {"level": "warn" if port else "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            # No background upload purging: it logs at startup and the storage is ours alone.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"{host}:{port}",
            # Only signs upload state between replicas; a fresh one per start keeps it out of files.
            "secret": secrets.token_hex(16),
        },
    }


class EmbeddedRegistry:
    """One ``docker-registry serve`` child listening on ``address`` with storage under ``root``."""

    def __init__(
        self,
        root: Path,
        address: str = "127.0.0.1:5000",
        *,
        binary: Path | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_grace: float = 5.0,
    ) -> None:
        self.root = Path(root)
        self.host, self.port = split_address(address)
        self.binary = binary
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.state = RegistryState.STOPPED
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedRegistry:
        return cls(settings.state_dir / "registry", settings.registry, stop_grace=settings.stop_grace)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def write_config(self) -> Path:
        self.storage.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(registry_config(self.storage, self.host, self.port), sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)
        return self.config_path

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        if self.state is not RegistryState.STOPPED:
            return
        binary = self.binary or find_registry_binary()
        if self.port and not port_is_free(self.host, self.port):
            raise PortInUse(
                f"cannot start the registry: {self.address} is already in use "
                "(another registry? pick another port with --registry / MLCLOUD_REGISTRY)",
                port=self.port,
            )
        self.state = RegistryState.STARTING
        config = self.write_config()
        self._log = self.log_path.open("ab")
        log_start = self._log.tell()
        self._proc = subprocess.Popen(
            [str(binary), "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                self._cleanup()
                if "address already in use" in tail:
                    raise PortInUse(f"cannot start the registry: {self.address} is already in use", port=self.port)
                raise RegistryStartFailed(f"docker-registry exited with {code} on {self.address}: {tail}")
            if not self.port:
                found = _LISTENING.search(self.log_path.read_bytes()[log_start:])
                self.port = int(found.group(1)) if found else 0
            if self.port and self._answers():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryStartFailed(
                    f"docker-registry did not answer GET {self.url}/v2/ within {self.start_timeout:.0f}s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)
        self.state = RegistryState.RUNNING

    async def wait_exit(self) -> int | None:
        """The exit code once the child ends (polled: a Popen has nothing to await)."""
        proc = self._proc
        assert proc is not None
        while (code := proc.poll()) is None:
            await asyncio.sleep(EXIT_POLL_INTERVAL)
        return code

    async def restart(self) -> None:
        """Start again after the child died; ``self.port`` already holds the port it got first."""
        await asyncio.to_thread(self._restart)

    def _restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM), then kill it after ``stop_grace`` seconds."""
        proc = self._proc
        if proc is None:
            self.state = RegistryState.STOPPED
            return
        self.state = RegistryState.STOPPING
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
        self._log = None
        self._proc = None
        self.state = RegistryState.STOPPED

    def __enter__(self) -> EmbeddedRegistry:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedRegistry:
        try:
            await asyncio.to_thread(self.start)
        except BaseException:
            # A cancelled start may have left a child behind.
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
