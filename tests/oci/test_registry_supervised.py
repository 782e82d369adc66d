"""The embedded registry under supervision: a killed one answers again on its port, its artifacts kept.

The bound asserted is issue 15's: back within 2 s of the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from mlcloud.lattice.control import ServerRestarted
from mlcloud.oci.build import build
from mlcloud.oci.pull import ArtifactStore
from mlcloud.oci.push import push
from mlcloud.oci.registry import EmbeddedRegistry
from mlcloud.server_supervisor import ServerSupervisor
from mlcloud.servers import port_is_free
from mlcloud.settings import Settings


def _v2_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=0.5) as response:
            return int(response.status)
    except (urllib.error.URLError, OSError):
        return None


async def test_a_killed_registry_is_back_on_its_port_with_its_artifacts(tmp_path: Path, component: Path) -> None:
    restarts: list[ServerRestarted] = []

    async def on_restart(restart: ServerRestarted) -> None:
        restarts.append(restart)

    async with (
        EmbeddedRegistry(tmp_path / "registry", "127.0.0.1:0") as registry,
        ServerSupervisor("registry", registry, on_restart),
    ):
        port, first_pid = registry.port, registry.pid
        assert first_pid is not None
        settings = Settings(state_dir=tmp_path / "state", keys_dir=tmp_path / "keys", registry=registry.address)
        push(build(component, settings.keys_dir, tmp_path / "build"), settings, "mlcloud/kept:1")

        killed = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)
        while not restarts or await asyncio.to_thread(_v2_status, f"http://127.0.0.1:{port}") != 200:
            assert time.monotonic() - killed < 2.0, "the registry did not answer GET /v2/ within 2 s of the kill"
            await asyncio.sleep(0.02)
        assert registry.port == port and registry.pid != first_pid
        assert [(r.server, r.url, r.exit_code, r.restarts) for r in restarts] == [
            ("registry", f"http://127.0.0.1:{port}", -signal.SIGKILL, 1)]

        # A fresh cache, so the pull reads the registry.
        fresh = settings.replace(state_dir=tmp_path / "other-state")
        verified = await ArtifactStore(fresh).pull_and_verify_async(f"{registry.address}/mlcloud/kept:1")
        assert (verified.path / "component.toml").read_bytes() == (component / "component.toml").read_bytes()


async def test_stopping_during_a_restart_leaves_no_registry_running(tmp_path: Path) -> None:
    async with EmbeddedRegistry(tmp_path / "registry", "127.0.0.1:0") as registry:
        async with ServerSupervisor("registry", registry, backoff=0.0):
            assert registry.pid is not None
            os.kill(registry.pid, signal.SIGKILL)
            await asyncio.sleep(0.03)  # the supervisor is starting it again
    assert registry.pid is None and registry.port and port_is_free("127.0.0.1", registry.port)
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "docker-registry"]
