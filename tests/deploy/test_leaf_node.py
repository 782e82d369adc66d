"""deploy/coral/nats-leaf.conf: a board's NATS leaf node of the hub deploy/run.sh configures.

Core NATS (every RPC) crosses the leaf connection. JetStream does not, so a board's host and
instances follow the lattice's links through the hub's hosts (mlcloud.lattice.links.LinkFeed).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import nats
import pytest

from mlcloud.errors import MLCloudError
from mlcloud.host.host import Host
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import NatsAuth
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.nats_server import find_nats_server
from mlcloud.lattice.wire import decode_reply, encode_request
from mlcloud.servers import free_port
from mlcloud.settings import Settings
from tests.conftest import COMPONENTS

from .conftest import PROJECT, stop_process_group

LEAF_CONF = PROJECT / "deploy" / "coral" / "nats-leaf.conf"


def start(config: Path, text: str) -> subprocess.Popen:
    config.write_text(text)
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        return subprocess.Popen([find_nats_server(), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


async def wait_log(path: Path, text: str, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while text not in (path.read_text() if path.exists() else ""):
            await asyncio.sleep(0.1)


async def _hub_and_leaf(tmp_path: Path):
    hub_port, leaf_listen, leaf_port = free_port(), free_port(), free_port()
    # What deploy/run.sh writes with MLCLOUD_NATS_LEAF_ADDRESS set (write_hub_config).
    hub = start(tmp_path / "hub.conf", f'server_name: "hub"\nlisten: "127.0.0.1:{hub_port}"\n'
                f'max_payload: 67108864\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                f'leafnodes {{ listen: "127.0.0.1:{leaf_listen}" }}\n')
    leaf_text = (LEAF_CONF.read_text().replace("@DEV@", "127.0.0.1").replace("@HOSTNAME@", "test")
                 .replace(":7422", f":{leaf_listen}").replace('"127.0.0.1:4222"', f'"127.0.0.1:{leaf_port}"'))
    await wait_log(tmp_path / "hub.log", "Server is ready")
    leaf = start(tmp_path / "leaf.conf", leaf_text)
    await wait_log(tmp_path / "leaf.log", "JetStream using domains")
    await asyncio.sleep(0.2)
    return hub, leaf, f"nats://127.0.0.1:{hub_port}", f"nats://127.0.0.1:{leaf_port}"


async def test_rpc_crosses_the_leaf_connection(tmp_path: Path) -> None:
    """Request/reply (every lattice RPC and control call) between a board's leaf and the hub."""
    hub, leaf, hub_url, leaf_url = await _hub_and_leaf(tmp_path)
    try:
        board, dev = await nats.connect(leaf_url), await nats.connect(hub_url)
        try:
            async def echo(msg) -> None:
                await msg.respond(b"board: " + msg.data)

            await board.subscribe("wasmbus.rpc.test.VPROVIDER.default", cb=echo)
            await board.flush()
            async with asyncio.timeout(10):
                while True:
                    try:
                        reply = await dev.request("wasmbus.rpc.test.VPROVIDER.default", b"x" * 2_000_000, timeout=2)
                        break
                    except nats.errors.NoRespondersError:  # interest still crossing the leaf
                        await asyncio.sleep(0.1)
            assert reply.data == b"board: " + b"x" * 2_000_000  # big payloads cross too
        finally:
            await board.close()
            await dev.close()
    finally:
        stop_process_group(leaf, grace=5)
        stop_process_group(hub, grace=5)


async def test_board_host_on_a_leaf_node_serves_a_link_set_on_the_hub(tmp_path: Path) -> None:
    """A host on a leaf without JetStream follows the links through the hub's hosts."""
    hub, leaf, hub_url, leaf_url = await _hub_and_leaf(tmp_path)
    try:
        lattice = f"leaf-{uuid.uuid4().hex[:8]}"
        # This hub and leaf take anonymous connections (deploy/coral's board configs do not yet
        # carry credentials); the hosts still need the account seed to mint their instances'.
        seed = NatsAuth.load_or_create(tmp_path / "nats-auth").account_seed_path
        dev = Settings.from_env({}, state_dir=tmp_path / "dev", lattice=lattice, nats_url=hub_url,
                                nats_account_seed=seed, heartbeat_interval=1.0, restart_backoff=0.2, dev=True)
        board = dev.replace(nats_url=leaf_url, state_dir=tmp_path / "board")
        async with Host(dev, {"arch": "x86_64"}) as dev_host, Host(board, {"arch": "aarch64"}) as board_host:
            async with await CtlClient.connect(dev) as ctl:
                async with asyncio.timeout(15):
                    while len(await ctl.get_hosts()) < 2:  # interest still crossing the leaf
                        await asyncio.sleep(0.2)
                provider = (await ctl.start_provider(board_host.id, str(COMPONENTS / "echo"))).provider_id
                actor = (await ctl.start_actor(dev_host.id, str(COMPONENTS / "caller"))).actor_id
                await ctl.put_link(actor, provider, "test:echo", values={"on": "board"})
                nc = await nats.connect(hub_url)
                try:
                    async with asyncio.timeout(20):
                        while True:
                            try:
                                answer = await nc.request(
                                    subjects.call(subjects.actor_target(lattice, actor), "test"),
                                    encode_request("Caller.Relay", {"x": 1}, invocation_id="t"), timeout=2)
                                answer = decode_reply(answer.data)
                                break
                            except MLCloudError:  # the link is still on its way to the board
                                await asyncio.sleep(0.2)
                finally:
                    await nc.close()
                assert answer["provider"]["values"] == {"on": "board"}
                assert board_host.links is not None and not board_host.links.writable
    finally:
        stop_process_group(leaf, grace=5)
        stop_process_group(hub, grace=5)


@pytest.mark.parametrize("name", ["nats-leaf.conf", "nats-standalone.conf"])
def test_board_nats_configs_parse(name: str, tmp_path: Path) -> None:
    text = (PROJECT / "deploy" / "coral" / name).read_text().replace("@DEV@", "10.0.0.1").replace("@HOSTNAME@", "b")
    (tmp_path / name).write_text(text)
    result = subprocess.run([find_nats_server(), "-t", "-c", str(tmp_path / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
