"""A real Bindle server in a child process, for tests of any suite that needs one.

    async with BindleServerProcess(tmp_path / "bindle") as server:
        async with AsyncClient(server.url) as client:
            ...

    with BindleServerProcess(tmp_path / "bindle") as server:   # blocking tests work too
        ...

The server runs ``python -m mlcloud.bindle serve`` on 127.0.0.1, port 0 unless one is given: the
server binds a free port itself and says which on its first line (``listening on …``), which is
read back, so no other process can take the port in between. It counts as started once
``/healthz`` answers. Stopping asks (SIGTERM), then kills; ``restart`` keeps the port and the
directory, so clients built before it keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import httpx

from mlcloud.errors import HostError

START_TIMEOUT = 15.0
STOP_GRACE = 5.0
_LISTENING = re.compile(r"listening on http://[^\s/]*:(\d+)/")


class BindleServerProcess:
    """One ``mlcloud.bindle serve`` child process over ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int | None = None, keyring: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or 0  # 0 until the server says which port it got
        self.keyring = keyring
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="bindle-server-", suffix=".log", delete=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/v1"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HostError("bindle server is not running")
        return self.process.pid

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def _spawn(self) -> None:
        args = [sys.executable, "-m", "mlcloud.bindle", "serve", "--directory", str(self.directory),
                "--address", self.address]
        args += ["--keyring", str(self.keyring)] if self.keyring else ["--unauthenticated"]
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise HostError(f"bindle server exited with {self.process.returncode}:\n"
                            f"{self.log_text()}")
        if not self.port and (found := _LISTENING.search(self.log_text())):
            self.port = int(found.group(1))

    def _timed_out(self) -> HostError:
        self.stop()
        return HostError(f"bindle server did not answer /healthz in {START_TIMEOUT}s:\n"
                         f"{self.log_text()}")

    # -- blocking ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        self._spawn()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if self.port and http.get(f"http://{self.address}/healthz").is_success:
                        return self
                time.sleep(0.05)
        raise self._timed_out()

    def stop(self, grace: float = STOP_GRACE) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    # -- asyncio ----------------------------------------------------------------------------

    async def astart(self, timeout: float = START_TIMEOUT) -> Self:
        self._spawn()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if self.port and (await http.get(f"http://{self.address}/healthz")).is_success:
                        return self
                await asyncio.sleep(0.05)
        raise self._timed_out()

    async def astop(self, grace: float = STOP_GRACE) -> None:
        await asyncio.to_thread(self.stop, grace)

    async def arestart(self) -> Self:
        await self.astop()
        return await self.astart()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def bindle_server(directory: str | os.PathLike[str], **kwargs: Any) -> AsyncIterator[BindleServerProcess]:
    """``async with bindle_server(dir) as server:`` — a started :class:`BindleServerProcess`."""
    async with BindleServerProcess(directory, **kwargs) as server:
        yield server
