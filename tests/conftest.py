"""Fixtures shared by the whole suite: a real nats-server (JetStream on) on a free port."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mlcloud.lattice.nats_server import NatsServer, free_port
from mlcloud.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
COMPONENTS = FIXTURES / "components"
PROJECT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def nats_server(tmp_path_factory: pytest.TempPathFactory):
    async with NatsServer(tmp_path_factory.mktemp("nats"), port=free_port()) as server:
        yield server


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> Settings:
    """Settings for one test: its own lattice on the test's NATS server, fast health checks."""
    return Settings.from_env(
        {},
        state_dir=tmp_path / "state",
        nats_url=nats_server.url,
        lattice=f"test-{uuid.uuid4().hex[:8]}",
        rpc_timeout=5.0,
        health_interval=0.5,
        heartbeat_interval=1.0,
        restart_backoff=0.2,
        stop_grace=3.0,
        ready_timeout=30.0,
    )
