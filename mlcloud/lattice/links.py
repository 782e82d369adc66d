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
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from mlcloud.errors import ConfigError, LatticeUnavailable, MLCloudError, NotFound
from mlcloud.lattice import subjects
from mlcloud.lattice.control import DEFAULT_LINK_NAME, EventName, LinkDefinition, LinkList
from mlcloud.lattice.ctl_client import Empty, ctl_request
from mlcloud.lattice.events import decode_event
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

def link_key(actor_id: str, contract_id: str, link_name: str) -> str:
    contract = hashlib.sha256(contract_id.encode()).hexdigest()[:16]
    return f"linkdefs.{actor_id}.{contract}.{subjects.check_token(link_name, 'link name')}"


def key_of(link: LinkDefinition) -> str:
    return link_key(link.actor_id, link.contract_id, link.link_name)


class LinkEvent(msgspec.Struct, frozen=True):
    link: LinkDefinition
    deleted: bool = False


class LinkStore:
    """The lattice's link definitions; every host, actor and provider opens its own."""

    writable = True

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, nc: NATS, lattice: str) -> LinkStore | None:
        """The lattice's bucket (created if missing), or None when the NATS server has no JetStream."""
        js = nc.jetstream()
        bucket = subjects.lattice_bucket(lattice)
        with nats_errors("opening the link store", bucket):
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.ServiceUnavailableError:
                return None
            except nats.js.errors.BucketNotFoundError:
                # Two hosts may race to create it; creating an identical bucket is idempotent.
                kv = await js.create_key_value(bucket=bucket, history=1, description="mlcloud lattice data")
            except nats.js.errors.BadBucketError as exc:
                raise ConfigError(f"the JetStream stream of bucket {bucket} is not a key-value bucket; "
                                  "remove that stream or use another lattice name") from exc
        return cls(kv)

    async def put(self, link: LinkDefinition) -> None:
        with nats_errors("putting a link", key_of(link)):
            await self.kv.put(key_of(link), msgspec.json.encode(link))

    async def delete(self, actor_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME) -> LinkDefinition:
        key = link_key(actor_id, contract_id, link_name)
        existing = await self.get(key)
        if existing is None:
            raise NotFound(f"no link from {actor_id} for {contract_id} ({link_name})")
        with nats_errors("deleting a link", key):
            await self.kv.delete(key)
        return existing

    async def get(self, key: str) -> LinkDefinition | None:
        with nats_errors("reading a link", key):
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
        with nats_errors("watching the links", "linkdefs.>"):
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
            # A connection that closed under the watch took its subscription with it; raising here
            # would replace the error (or cancellation) that ended the watch.
            with contextlib.suppress(LatticeUnavailable), nats_errors("ending the watch of the links", "linkdefs.>"):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated


class LinkFeed:
    """Links followed read-only over core NATS, for processes without JetStream."""

    writable = False

    def __init__(self, nc: NATS, lattice: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout

    async def all(self) -> list[LinkDefinition]:
        reply = await ctl_request(self.nc, subjects.ctl_links(self.lattice, "get"), Empty(), LinkList,
                                  timeout=self.timeout)
        return reply.links

    async def watch(self, *, follow: bool = True) -> AsyncIterator[LinkEvent | None]:
        """As :meth:`LinkStore.watch`; events that race the first read are applied after it."""
        queue: asyncio.Queue[LinkEvent] = asyncio.Queue()

        async def on_event(msg: Msg) -> None:
            try:
                event = decode_event(msg.data)
            except MLCloudError as err:
                log.debug("ignored an event: %s", err.message)
                return
            if isinstance(event.data, LinkDefinition):
                queue.put_nowait(LinkEvent(event.data, deleted=event.name == EventName.LINKDEF_DELETED))

        sub = None
        if follow:
            with nats_errors("following link events", subjects.events(self.lattice)):
                sub = await self.nc.subscribe(subjects.events(self.lattice), cb=on_event)
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
                with nats_errors("leaving link events", subjects.events(self.lattice)):
                    await sub.unsubscribe()


async def open_links(nc: NATS, lattice: str) -> LinkStore | LinkFeed:
    """The JetStream link store, or a read-only :class:`LinkFeed` where JetStream is not reachable."""
    store = await LinkStore.open(nc, lattice)
    if store is None:
        log.info("no JetStream on this NATS server: following links through the control interface")
        return LinkFeed(nc, lattice)
    return store
