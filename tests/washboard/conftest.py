"""Fixtures of the washboard tests: a host running real components, linked, and a washboard on a free port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mlcloud.host.host import Host
from mlcloud.interfaces import MLINFERENCE
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.servers import running_app
from mlcloud.washboard.access import load_or_create_token
from mlcloud.washboard.app import WATCHER, create_washboard
from mlcloud.washboard.watcher import LatticeWatcher
from tests.conftest import COMPONENTS

WASHBOARD_FIXTURES = Path(__file__).parent / "fixtures"
CALLER = str(COMPONENTS / "caller")
ECHO = str(COMPONENTS / "echo")
ROUTER = str(WASHBOARD_FIXTURES / "router")
INFERENCE = str(WASHBOARD_FIXTURES / "inference")
MODEL_LINK = {
    "mobilenetv27": "efficientnet-lite0/1.0.0",
    "identity": "identity_model/0.2.0",
    "plus3": "plus3/0.1.0",
    "squeezenet": "missing-squeezenet/0.1.0",
    "api_token": "s3cret-token",
}


@dataclass
class Lattice:
    host: Host
    ctl: CtlClient
    caller: str
    echo: str
    router: str
    inference: str


@dataclass
class Washboard:
    url: str
    watcher: LatticeWatcher
    token: str

    @property
    def page_url(self) -> str:
        """The address `mlcloud up` prints: the page with the token in its fragment."""
        return f"{self.url}#token={self.token}"


@pytest.fixture
async def lattice(settings):
    """One host running two actors and two providers, linked as the real app is shaped."""
    async with Host(settings, labels={"zone": "lab", "coral": "false"}) as host:
        ctl = await CtlClient.connect(settings)
        try:
            echo_config = {"greeting": "hi", "db_password": "hunter2"}
            echo = (await ctl.start_provider(host.id, ECHO, config=echo_config)).provider_id
            inference = (await ctl.start_provider(host.id, INFERENCE, config={"engine": "onnxruntime"})).provider_id
            caller = (await ctl.start_actor(host.id, CALLER)).actor_id
            router = (await ctl.start_actor(host.id, ROUTER)).actor_id
            await ctl.put_link(caller, echo, "test:echo",
                               values={"greeting": "hello", "secret_key": "abc123", "api_keys./plus3": "k-plus3"})
            await ctl.put_link(router, inference, MLINFERENCE, values=MODEL_LINK)
            yield Lattice(host, ctl, caller, echo, router, inference)
        finally:
            await ctl.close()


@pytest.fixture
async def washboard(settings):
    """Started before ``lattice`` when a test names it first, so the feed sees the lattice start up."""
    token = load_or_create_token(settings.state_dir)
    app = create_washboard(settings, token=token, poll_interval=0.5)
    # With aiohttp's access log on, so a test can show that the token never reaches it.
    async with running_app(app, "127.0.0.1:0", "the washboard") as address:
        yield Washboard(f"http://{address}/", app[WATCHER], token)
