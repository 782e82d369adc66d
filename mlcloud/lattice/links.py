"""Link definitions (actor ↔ provider + config values), kept in a JetStream key-value bucket.

A link is identified by (actor, contract, link name): an actor has at most one provider per
contract and link name. Because links live in JetStream, a provider or host that (re)starts
reads every link back; :meth:`LinkStore.watch` yields the existing links, then each change.

A process whose NATS server has no JetStream (a board's leaf node, whose hub holds the lattice's
JetStream) follows the links read-only through core NATS instead (:class:`LinkFeed`): the control
interface's ``linkdefs.get``, answered by a host that has JetStream, then the ``linkdef_set`` and
``linkdef_deleted`` events. :func:`open_links` picks whichever is reachable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from mlcloud.errors import NotFound
from mlcloud.lattice import subjects

log = logging.getLogger(__name__)

DEFAULT_LINK_NAME = "default"


class LinkDefinition(msgspec.Struct, kw_only=True, frozen=True):
    actor_id: str
    provider_id: str
    contract_id: str
    link_name: str = DEFAULT_LINK_NAME
    values: dict[str, str] = {}

    @property
    def key(self) -> str:
        return link_key(self.actor_id, self.contract_id, self.link_name)


def link_key(actor_id: str, contract_id: str, link_name: str) -> str:
    contract = hashlib.sha256(contract_id.encode()).hexdigest()[:16]
    return f"linkdefs.{actor_id}.{contract}.{subjects.check_token(link_name, 'link name')}"


class LinkEvent(msgspec.Struct, frozen=True):
    link: LinkDefinition
    deleted: bool = False


class LinkStore:
    """The lattice's link definitions; every host, actor and provider opens its own."""

    writable = True

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, nc: NATS, lattice: str) -> LinkStore:
        js = nc.jetstream()
        bucket = subjects.lattice_bucket(lattice)
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            # Two hosts may race to create it; creating an identical bucket is idempotent.
            kv = await js.create_key_value(bucket=bucket, history=1, description="mlcloud lattice data")
        return cls(kv)

    async def put(self, link: LinkDefinition) -> None:
        await self.kv.put(link.key, msgspec.json.encode(link))

    async def delete(self, actor_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME) -> LinkDefinition:
        key = link_key(actor_id, contract_id, link_name)
        existing = await self.get(key)
        if existing is None:
            raise NotFound(f"no link from {actor_id} for {contract_id} ({link_name})")
        await self.kv.delete(key)
        return existing

    async def get(self, key: str) -> LinkDefinition | None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=LinkDefinition) if entry.value else None

    async def all(self) -> list[LinkDefinition]:
        links: list[LinkDefinition] = []
        async for event in self.watch(follow=False):
            if event is not None:
                links.append(event.link)
        return sorted(links, key=lambda link: (link.actor_id, link.contract_id, link.link_name))

    async def watch(self, *, follow: bool = True) -> AsyncIterator[LinkEvent | None]:
        """Every current link, then (when ``follow``) ``None`` once, then each put and delete."""
        watcher = await self.kv.watch("linkdefs.>")
        known: dict[str, LinkDefinition] = {}
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    if not follow:
                        return
                    yield None
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    gone = known.pop(entry.key, None)
                    if gone is not None:
                        yield LinkEvent(gone, deleted=True)
                    continue
                link = msgspec.json.decode(entry.value, type=LinkDefinition)
                known[entry.key] = link
                yield LinkEvent(link)
        finally:
            await watcher.stop()


class LinkFeed:
    """Links followed read-only over core NATS, for processes without JetStream."""

    writable = False

    def __init__(self, nc: NATS, lattice: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout

    async def all(self) -> list[LinkDefinition]:
        reply = await self.nc.request(subjects.ctl_links(self.lattice, "get"), b"{}", timeout=self.timeout)
        body = msgspec.json.decode(reply.data) if reply.data else {}
        return [msgspec.convert(link, LinkDefinition) for link in body.get("links", [])]

    async def watch(self, *, follow: bool = True) -> AsyncIterator[LinkEvent | None]:
        """As :meth:`LinkStore.watch`; events that race the first read are applied after it."""
        queue: asyncio.Queue[LinkEvent] = asyncio.Queue()

        async def on_event(msg) -> None:
            event = msgspec.json.decode(msg.data)
            name = str(event.get("type", "")).rsplit(".", 1)[-1]
            if name in ("linkdef_set", "linkdef_deleted"):
                link = msgspec.convert(event["data"], LinkDefinition)
                queue.put_nowait(LinkEvent(link, deleted=name == "linkdef_deleted"))

        sub = await self.nc.subscribe(subjects.events(self.lattice), cb=on_event) if follow else None
        try:
            for link in await self.all():
                yield LinkEvent(link)
            if not follow:
                return
            yield None
            while True:
                yield await queue.get()
        finally:
            if sub is not None:
                await sub.unsubscribe()


async def open_links(nc: NATS, lattice: str) -> LinkStore | LinkFeed:
    """The JetStream link store, or a read-only :class:`LinkFeed` where JetStream is not reachable."""
    try:
        return await LinkStore.open(nc, lattice)
    except nats.js.errors.ServiceUnavailableError:
        log.info("no JetStream on this NATS server: following links through the control interface")
        return LinkFeed(nc, lattice)
