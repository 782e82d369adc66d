"""The link store over a real nats-server: every current link is read, even when the server is slow.

A loaded nats-server may answer a consumer-info request before it has sent the messages that
consumer already delivered (they wait in the stream's send queue). :class:`LateDeliveries` makes
that happen every time: a proxy that lets the server deliver before it sees a consumer-info
request, and holds the deliveries back until after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mlcloud.lattice.auth import credentials_for
from mlcloud.lattice.connect import connect
from mlcloud.lattice.control import LinkDefinition
from mlcloud.lattice.links import LinkEvent, LinkStore
from mlcloud.settings import Settings

LINKS = [LinkDefinition(actor_id=f"MACTOR{i}", provider_id="VPROVIDER", contract_id="mlcloud:test") for i in range(3)]


class LateDeliveries:
    """A TCP proxy to nats-server: consumer-info requests reach the server ``hold / 5`` s late, and
    JetStream deliveries (a ``$JS.ACK`` reply) reach the client ``hold`` s late; the rest passes."""

    def __init__(self, upstream_port: int, hold: float) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LateDeliveries:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.add(asyncio.create_task(coro))

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._spawn(self._to_server(client_r, server_w))
        self._spawn(self._to_client(server_r, client_w))

    @staticmethod
    async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[list[bytes], bytes]]:
        """The protocol's frames (control line tokens, whole frame); a (H)PUB or (H)MSG ends with its size."""
        while line := await reader.readline():
            tokens = line.split()
            if tokens and tokens[0] in (b"PUB", b"HPUB", b"MSG", b"HMSG"):
                line += await reader.readexactly(int(tokens[-1]) + 2)
            yield tokens, line

    async def _to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer):
            async for tokens, frame in self._frames(reader):
                if tokens[0] in (b"PUB", b"HPUB") and tokens[1].startswith(b"$JS.API.CONSUMER.INFO."):
                    await asyncio.sleep(self.hold / 5)  # time for the server to send every delivery
                writer.write(frame)
                await writer.drain()

    async def _to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._spawn(self._release(held, writer))
        loop = asyncio.get_running_loop()
        with contextlib.closing(writer):
            async for tokens, frame in self._frames(reader):
                # MSG subject sid [reply] size; HMSG subject sid [reply] header-size size
                if len(tokens) == (6 if tokens[0] == b"HMSG" else 5) and tokens[3].startswith(b"$JS.ACK."):
                    held.put_nowait((loop.time() + self.hold, frame))
                else:
                    writer.write(frame)

    @staticmethod
    async def _release(held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, frame = await held.get()
            await asyncio.sleep(due - loop.time())
            writer.write(frame)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[LinkStore]:
    """The lattice's link store, holding :data:`LINKS`."""
    nc = await connect(settings.effective_nats_url, name="test", credentials=credentials_for(settings, "host.creds"))
    store = await LinkStore.open(nc, settings.lattice)
    assert store is not None
    yield store
    await nc.close()


@pytest.fixture
async def late_nc(settings: Settings, nats_server) -> AsyncIterator[NATS]:
    """A connection to the test's nats-server whose JetStream deliveries come after consumer infos."""
    async with LateDeliveries(nats_server.port, hold=0.5) as proxy:
        nc = await connect(f"nats://127.0.0.1:{proxy.port}", name="late", reconnect=False,
                           credentials=credentials_for(settings, "host.creds"))
        yield nc
        await nc.close()


async def late_store(late_nc: NATS, settings: Settings) -> LinkStore:
    store = await LinkStore.open(late_nc, settings.lattice)
    assert store is not None
    return store


async def test_every_link_is_read_when_the_deliveries_come_after_the_consumer_info(store, late_nc, settings):
    for link in LINKS:
        await store.put(link)
    assert await (await late_store(late_nc, settings)).all() == LINKS


async def test_a_watch_ends_the_current_links_only_after_all_of_them_then_follows(store, late_nc, settings):
    for link in LINKS[:2]:
        await store.put(link)
    events = aiter((await late_store(late_nc, settings)).watch(follow=True))
    assert [await anext(events) for _ in range(3)] == [LinkEvent(LINKS[0]), LinkEvent(LINKS[1]), None]
    await store.put(LINKS[2])
    await store.delete(LINKS[0].actor_id, LINKS[0].contract_id)
    assert [await anext(events) for _ in range(2)] == [LinkEvent(LINKS[2]), LinkEvent(LINKS[0], deleted=True)]
    await events.aclose()


async def test_an_empty_store_ends_its_current_links_at_once(store, late_nc, settings):
    late = await late_store(late_nc, settings)
    assert await asyncio.wait_for(late.all(), 5) == []
    events = aiter(late.watch(follow=True))
    assert await anext(events) is None
    await store.put(LINKS[0])
    assert await anext(events) == LinkEvent(LINKS[0])
    await events.aclose()
