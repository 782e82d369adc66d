"""Leaving a NATS connection: drained when NATS is there, closed when it is not."""

from __future__ import annotations

import asyncio

from mlcloud.lattice.connect import leave
from tests.conftest import host_connection


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
