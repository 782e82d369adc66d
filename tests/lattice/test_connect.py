"""Flushing and leaving a NATS connection: after a flush other connections reach its new subscriptions;
leaving drains it when NATS is there, closes it when it is not. Several URLs (a cluster's nodes): a
client connects to one that answers."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.aio.msg import Msg

from mlcloud.lattice.auth import Credentials
from mlcloud.lattice.connect import connect, flush, leave
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.servers import free_port
from mlcloud.settings import Settings
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


def test_nats_url_may_list_the_nodes_of_a_cluster() -> None:
    settings = Settings.from_env({"MLCLOUD_NATS_URL": " nats://a:4222 ,nats://b:4222,"})
    assert settings.nats_urls == ["nats://a:4222", "nats://b:4222"]
    assert Settings.from_env(settings.to_env()).nats_urls == settings.nats_urls  # what instances inherit
    assert Settings.from_env({}, nats_port=4333).nats_urls == ["nats://127.0.0.1:4333"]


@pytest.mark.parametrize("reconnect", [True, False])
async def test_a_client_given_several_urls_connects_to_one_that_answers(
    nats_server: NatsServer, host_creds: Credentials, reconnect: bool
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    for urls in ([dead, nats_server.url], [nats_server.url, dead]):
        nc = await connect(",".join(urls), name="test", credentials=host_creds, reconnect=reconnect, timeout=5)
        try:
            assert nc.connected_url is not None and nc.connected_url.port == nats_server.port
        finally:
            await leave(nc, "test")
