"""nats-py's errors become mlcloud errors at one boundary, against a real nats-server and a closed port."""

from __future__ import annotations

import asyncio
import socket

import nats
import nats.errors
import pytest

from mlcloud.errors import LatticeUnavailable, NoResponders, PayloadTooLarge, RpcTimeout
from mlcloud.lattice.auth import Credentials
from mlcloud.lattice.connect import connect
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.lattice.natserrors import nats_errors


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released, then never used)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_lattice_unavailable_not_no_responders():
    url = f"nats://127.0.0.1:{closed_port()}"
    with pytest.raises(LatticeUnavailable, match="cannot reach NATS") as info:
        await connect(url, name="test", reconnect=False, timeout=1.0)
    assert info.value.http_status == 503 and info.value.__cause__ is not None


async def test_request_errors_keep_their_cause(nats_server: NatsServer, host_creds: Credentials):
    nc = await connect(nats_server.url, name="test", credentials=host_creds)
    try:
        with pytest.raises(NoResponders, match=r"nobody serves t\.none \(Op\.X\)") as nobody:
            with nats_errors("Op.X", "t.none", timeout=1):
                await nc.request("t.none", b"", timeout=1)
        assert isinstance(nobody.value.__cause__, nats.errors.NoRespondersError)

        sub = await nc.subscribe("t.silent")  # takes the request, never answers
        with pytest.raises(RpcTimeout, match="Op.Y on t.silent did not answer within 0.2 s"):
            with nats_errors("Op.Y", "t.silent", timeout=0.2):
                await nc.request("t.silent", b"", timeout=0.2)
        await sub.unsubscribe()

        too_big = b"x" * (nc.max_payload + 1)
        with pytest.raises(PayloadTooLarge, match="raise its max_payload"):
            with nats_errors("Op.Z", "t.big", size=len(too_big), limit=nc.max_payload):
                await nc.publish("t.big", too_big)
    finally:
        await nc.close()
    with pytest.raises(LatticeUnavailable, match="NATS cannot carry it now") as closed:
        with nats_errors("Op.X", "t.none"):
            await nc.publish("t.none", b"")
    assert isinstance(closed.value.__cause__, nats.errors.ConnectionClosedError)


async def test_ctl_client_on_a_stopped_server_is_lattice_unavailable(tmp_path):
    server = NatsServer(tmp_path / "nats", port=closed_port())
    async with server:
        nc = await connect(server.url, name="test", reconnect=False, timeout=5.0)
        ctl = CtlClient(nc, "gone", timeout=1.0)
        assert await ctl.get_hosts(wait=0.2) == []  # an empty lattice is an answer
    await asyncio.sleep(0.2)  # the client sees the server go
    with pytest.raises(LatticeUnavailable):
        await ctl.get_inventory("NHOST")
    await ctl.close()
