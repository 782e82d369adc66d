"""Calls fail fast while NATS is away (503 ``LatticeUnavailable`` within 1 s, not a 504 at the
deadline), nothing is sent late from the reconnect buffer, and calls work again once NATS is back."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS

from mlcloud.errors import LatticeUnavailable
from mlcloud.lattice.connect import connect
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.lattice.rpc import RpcClient, RpcServer
from mlcloud.lattice.wire import Invocation

FAIL_FAST = 1.0  # seconds: the most a call may take to fail while NATS is away
DEADLINE = 8.0  # the calls' own deadline, far above FAIL_FAST so a timeout cannot pass for fail-fast


async def wait_until(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def nc(nats_server, host_creds):
    """A connection that reconnects as the lattice's do; it both serves and calls."""
    client = await connect(nats_server.url, name="test", credentials=host_creds)
    yield client
    await client.close()


async def test_calls_fail_fast_while_nats_is_away_and_work_again_after(nats_server: NatsServer, nc: NATS) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def handler(invocation: Invocation) -> str:
        message: str = invocation.payload(str)
        seen.append(message)
        if message == "held":
            await release.wait()
        return message

    server = await RpcServer(nc, "svc", handler, identity="MSVC").start()
    client = RpcClient(nc, caller="MCALLER", timeout=DEADLINE)
    assert await client.call("svc", "Echo", "before", str) == "before"

    # A call waiting for its answer when NATS goes down fails when the connection drops.
    held = asyncio.create_task(client.call("svc", "Echo", "held", str))
    await wait_until(lambda: "held" in seen)
    stopping = time.perf_counter()
    await nats_server.stop()
    stopped = time.perf_counter()
    with pytest.raises(LatticeUnavailable):
        await held
    in_flight = time.perf_counter() - stopping
    release.set()

    # A call made while NATS is away fails before anything is published or buffered.
    started = time.perf_counter()
    with pytest.raises(LatticeUnavailable, match="reconnecting"):
        await client.call("svc", "Echo", "while away", str)
    while_away = time.perf_counter() - started
    print(f"\nfail fast: in flight {in_flight * 1000:.0f} ms after the stop began "
          f"(the stop took {(stopped - stopping) * 1000:.0f} ms), new call {while_away * 1000:.1f} ms")
    assert in_flight < FAIL_FAST and while_away < FAIL_FAST

    await nats_server.start()  # the same port and data dir
    await wait_until(lambda: nc.is_connected)
    assert await client.call("svc", "Echo", "after", str) == "after"
    # The call refused while away never reached the handler later from a reconnect buffer.
    await asyncio.sleep(0.2)
    assert seen == ["before", "held", "after"]
    await server.stop()
