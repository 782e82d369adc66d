"""deploy/coral/nats-leaf.conf: a board's NATS leaf node of the hub deploy/run.sh configures.

Both servers run in operator mode with the development machine's operator and accounts: the leaf
connects with the board's leaf.creds and every client on the board needs credentials, as on the
hub. Core NATS (every RPC) crosses the leaf connection. JetStream does not, so a board's host
follows the lattice's links through the hub's hosts and relays them to its instances
(mlcloud.lattice.links.LinkFeed and LinkRelay).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest

from mlcloud.errors import MLCloudError
from mlcloud.host.host import Host
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import BOARD_SERVER_CONFIG, Credentials, NatsAuth
from mlcloud.lattice.connect import connect
from mlcloud.lattice.control import EventName
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.events import cloud_event
from mlcloud.lattice.nats_server import find_nats_server
from mlcloud.lattice.wire import decode_reply, encode_request
from mlcloud.servers import free_port
from mlcloud.settings import Settings
from tests.conftest import COMPONENTS

from .conftest import PROJECT, clean_environ, mlcloud_bin, stop_process_group

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


def nats_creds(board: str, out: Path, state_dir: Path) -> None:
    """`mlcloud nats-creds` on the development machine, as docs/deploy.md says."""
    subprocess.run([mlcloud_bin(), "nats-creds", board, "--out", str(out)], check=True, capture_output=True,
                   env={**clean_environ(), "MLCLOUD_STATE_DIR": str(state_dir)})


def leaf_config(board_auth: Path, account: str, dev: str, leaf_listen: int, port: int, config_dir: Path) -> str:
    """deploy/coral/nats-leaf.conf filled in as install.sh --nats leaf does, beside its nats-auth.conf."""
    shutil.copy(board_auth / BOARD_SERVER_CONFIG, config_dir / "nats-auth.conf")
    return (LEAF_CONF.read_text().replace("@DEV@", dev).replace("@HOSTNAME@", "test")
            .replace("@AUTH_DIR@", str(board_auth)).replace("@ACCOUNT@", account)
            .replace(":7422", f":{leaf_listen}").replace('"127.0.0.1:4222"', f'"127.0.0.1:{port}"'))


@dataclass
class Lattice:
    hub_url: str
    leaf_url: str
    dev_state: Path  # the development machine's state dir (its nats-auth: host.creds, ctl.creds)
    board_state: Path  # the board's, with nats-auth where install.sh --nats-auth puts it

    def dev_creds(self) -> Credentials:
        return Credentials.load(self.dev_state / "nats-auth" / "host.creds")

    def board_creds(self) -> Credentials:
        return Credentials.load(self.board_state / "nats-auth" / "host.creds")


async def _hub_and_leaf(tmp_path: Path) -> tuple[subprocess.Popen, subprocess.Popen, Lattice]:
    hub_port, leaf_listen, leaf_port = free_port(), free_port(), free_port()
    auth = NatsAuth.load_or_create(tmp_path / "dev" / "nats-auth")
    auth.write_creds()  # what `mlcloud up` gives its host, the CLI and the washboard
    board_auth = tmp_path / "board" / "nats-auth"
    nats_creds("test", board_auth, tmp_path / "dev")
    # What deploy/run.sh writes with MLCLOUD_NATS_LEAF_ADDRESS set (write_hub_config), with the
    # lines `mlcloud nats-config` prints.
    hub = start(tmp_path / "hub.conf", f'server_name: "hub"\nlisten: "127.0.0.1:{hub_port}"\n'
                f'max_payload: 67108864\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                f'leafnodes {{ listen: "127.0.0.1:{leaf_listen}" }}\n' + auth.server_config())
    await wait_log(tmp_path / "hub.log", "Server is ready")
    leaf = start(tmp_path / "leaf.conf",
                 leaf_config(board_auth, auth.account.public_key, "127.0.0.1", leaf_listen, leaf_port, tmp_path))
    await wait_log(tmp_path / "leaf.log", f"Leafnode connection created for account: {auth.account.public_key}")
    await wait_log(tmp_path / "leaf.log", "JetStream using domains")
    await asyncio.sleep(0.2)
    return hub, leaf, Lattice(f"nats://127.0.0.1:{hub_port}", f"nats://127.0.0.1:{leaf_port}",
                              tmp_path / "dev", tmp_path / "board")


def test_nats_creds_writes_a_board_bundle_readable_by_its_owner_only(tmp_path: Path) -> None:
    nats_creds("rpi5", tmp_path / "bundle", tmp_path / "dev")
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o700
    names = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "bundle").iterdir()}
    assert names == dict.fromkeys(["host.creds", "leaf.creds", "account.nk", BOARD_SERVER_CONFIG], 0o600)
    account = NatsAuth.load_or_create(tmp_path / "dev" / "nats-auth").account
    assert (tmp_path / "bundle" / "account.nk").read_text().strip() == account.key.seed


async def test_an_anonymous_client_on_the_leaf_is_refused(tmp_path: Path) -> None:
    hub, leaf, lattice = await _hub_and_leaf(tmp_path)
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(lattice.leaf_url, allow_reconnect=False, max_reconnect_attempts=0,
                               connect_timeout=3)
        # The leaf's own credentials open no client connection (on the hub or anywhere).
        with pytest.raises(MLCloudError, match="Authorization Violation"):
            await connect(lattice.hub_url, name="leaf-as-client", reconnect=False, timeout=3,
                          credentials=Credentials.load(lattice.board_state / "nats-auth" / "leaf.creds"))
    finally:
        stop_process_group(leaf, grace=5)
        stop_process_group(hub, grace=5)


async def test_rpc_crosses_the_leaf_connection(tmp_path: Path) -> None:
    """Request/reply (every lattice RPC and control call) between a board's leaf and the hub."""
    hub, leaf, lattice = await _hub_and_leaf(tmp_path)
    try:
        board = await connect(lattice.leaf_url, name="board", credentials=lattice.board_creds())
        dev = await connect(lattice.hub_url, name="dev", credentials=lattice.dev_creds())
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
    """A host on a leaf without JetStream follows the links through the hub's hosts, and its
    instances (which may not) through their host; each finds its credentials in its state dir."""
    hub, leaf, nets = await _hub_and_leaf(tmp_path)
    try:
        lattice = f"leaf-{uuid.uuid4().hex[:8]}"
        dev = Settings.from_env({}, state_dir=nets.dev_state, lattice=lattice, nats_url=nets.hub_url,
                                heartbeat_interval=1.0, restart_backoff=0.2, dev=True)
        board = dev.replace(nats_url=nets.leaf_url, state_dir=nets.board_state)
        async with Host(dev, {"arch": "x86_64"}) as dev_host, Host(board, {"arch": "aarch64"}) as board_host:
            async with await CtlClient.connect(dev) as ctl:
                async with asyncio.timeout(15):
                    while len(await ctl.get_hosts()) < 2:  # interest still crossing the leaf
                        await asyncio.sleep(0.2)
                provider = (await ctl.start_provider(board_host.id, str(COMPONENTS / "echo"))).provider_id
                actor = (await ctl.start_actor(dev_host.id, str(COMPONENTS / "caller"))).actor_id
                await ctl.put_link(actor, provider, "test:echo", values={"on": "board"})
                nc = await connect(nets.hub_url, name="test", credentials=nets.dev_creds())

                async def values_seen_on_the_board() -> dict[str, str] | None:
                    try:
                        answer = await nc.request(subjects.call(subjects.actor_target(lattice, actor), "test"),
                                                  encode_request("Caller.Relay", {"x": 1}, invocation_id="t"),
                                                  timeout=2)
                        return decode_reply(answer.data)["provider"]["values"]
                    except MLCloudError:  # the link is still on its way to the board
                        return None

                async def wait_for(values: dict[str, str]) -> None:
                    async with asyncio.timeout(20):
                        while (seen := await values_seen_on_the_board()) != values:
                            assert seen != {"on": "forged"}
                            await asyncio.sleep(0.2)

                try:
                    await wait_for({"on": "board"})
                    # Anyone on the lattice may publish an event (instances do): a forged link
                    # event is only a hint to read the links again, then a real change arrives.
                    link = (await ctl.get_links())[0]
                    forged = msgspec.structs.replace(link, values={"on": "forged"})
                    await nc.publish(subjects.events(lattice), msgspec.json.encode(
                        cloud_event(EventName.LINKDEF_SET, dev_host.id, forged)))
                    await asyncio.sleep(1)  # time enough for it to reach the board's instance
                    assert await values_seen_on_the_board() == {"on": "board"}
                    await ctl.put_link(actor, provider, "test:echo", values={"on": "changed"})
                    await wait_for({"on": "changed"})
                finally:
                    await nc.close()
                assert board_host.links is not None and not board_host.links.writable
    finally:
        stop_process_group(leaf, grace=5)
        stop_process_group(hub, grace=5)


@pytest.mark.parametrize("name", ["nats-leaf.conf", "nats-standalone.conf"])
def test_board_nats_configs_parse(name: str, tmp_path: Path) -> None:
    auth = NatsAuth.load_or_create(tmp_path / "dev")
    auth.write_board("b", tmp_path / "auth")
    text = leaf_config(tmp_path / "auth", auth.account.public_key, "10.0.0.1", 7422, 4222, tmp_path)
    if name != "nats-leaf.conf":
        text = (PROJECT / "deploy" / "coral" / name).read_text().replace("@HOSTNAME@", "b")
    (tmp_path / name).write_text(text)
    result = subprocess.run([find_nats_server(), "-t", "-c", str(tmp_path / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
