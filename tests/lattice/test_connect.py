"""Flushing and leaving a NATS connection: after a flush other connections reach its new subscriptions;
leaving drains it when NATS is there, closes it when it is not."""

from __future__ import annotations

import asyncio

import nats.errors
from nats.aio.msg import Msg

from mlcloud.lattice.connect import flush, leave
from tests.conftest import host_connection


async def test_after_a_flush_another_connection_reaches_a_new_subscription_every_time(settings):
    """nats-py's own ``flush()`` lets its PING overtake the SUB still in its buffer: a request from
    elsewhere then met "no responders" now and again (a few in a hundred under load)."""
    server, caller = await host_connection(settings), await host_connection(settings)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    missed = 0
    for i in range(300):
        sub = await server.subscribe(f"test.flush.{i}", cb=echo)
        await flush(server)
        try:
            await caller.request(f"test.flush.{i}", b"x", timeout=5)
        except nats.errors.NoRespondersError:
            missed += 1
        await sub.unsubscribe()
    await leave(server, "server")
    await leave(caller, "caller")
    assert missed == 0


async def test_leaving_drains_the_connection_and_a_second_leave_does_nothing(settings):
    nc = await host_connection(settings)
    await leave(nc, "test")
    assert nc.is_closed
    await leave(nc, "test")


async def test_leaving_while_nats_is_away_closes_the_connection_instead_of_raising(nats_server, settings):
    """An instance stopped while NATS restarts must end cleanly, not with nats-py's traceback
    (``drain`` refuses a reconnecting connection and would leave it reconnecting for ever)."""
    nc = await host_connection(settings)
    await nats_server.stop()
    async with asyncio.timeout(10):
        while not nc.is_reconnecting:
            await asyncio.sleep(0.05)
    await nc.publish("test.buffered", b"kept until NATS is back")  # as a host says host_stopped
    await leave(nc, "test")
    assert nc.is_closed
