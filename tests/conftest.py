"""Fixtures shared by the whole suite: a real nats-server (JetStream on, operator mode: every
connection needs credentials) on a port it picks."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mlcloud.lattice.auth import Credentials, NatsAuth, credentials_for
from mlcloud.lattice.connect import connect
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
COMPONENTS = FIXTURES / "components"
PROJECT = Path(__file__).parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory):
    """Keys and other user-level state go to a temporary dir, never the user's own."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def nats_auth(tmp_path_factory: pytest.TempPathFactory) -> NatsAuth:
    """The operator and accounts of the test's nats-server, with ``host.creds`` and ``ctl.creds`` written."""
    auth = NatsAuth.load_or_create(tmp_path_factory.mktemp("nats-auth"))
    auth.write_creds()
    return auth


@pytest.fixture
def host_creds(nats_auth: NatsAuth) -> Credentials:
    """Credentials with every right, as a host has: what a test connects with to play any part."""
    return Credentials.load(nats_auth.directory / "host.creds")


@pytest.fixture
async def nats_server(tmp_path_factory: pytest.TempPathFactory, nats_auth: NatsAuth):
    async with NatsServer(tmp_path_factory.mktemp("nats"), port=0, auth=nats_auth) as server:
        yield server


async def host_connection(settings: Settings) -> NATS:
    """A NATS connection with a host's rights, for a test that plays callers or watches events."""
    return await connect(settings.effective_nats_url, name="test", credentials=credentials_for(settings, "host.creds"))


@pytest.fixture
def settings(nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path) -> Settings:
    """Settings for one test: its own lattice on the test's NATS server as a host, fast health checks.

    ``dev=True``: the fixtures start local component folders (tests/fixtures/components), which
    only a host in development mode runs; a test of the refusal replaces it with ``dev=False``.
    """
    return Settings.from_env(
        {},
        state_dir=tmp_path / "state",
        keys_dir=tmp_path / "state" / "keys",
        nats_url=nats_server.url,
        nats_creds=nats_auth.directory / "host.creds",
        nats_account_seed=nats_auth.account_seed_path,
        lattice=f"test-{uuid.uuid4().hex[:8]}",
        rpc_timeout=5.0,
        health_interval=0.5,
        heartbeat_interval=1.0,
        restart_backoff=0.2,
        stop_grace=3.0,
        ready_timeout=30.0,
        dev=True,
    )
