"""Link definitions (actor ↔ provider + config values), kept in a JetStream key-value bucket.

A link is identified by (actor, contract, link name): an actor has at most one provider per
contract and link name. Because links live in JetStream, a provider or host that (re)starts
reads every link back; :meth:`LinkStore.watch` yields the existing links, then each change.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from mlcloud.errors import NotFound
from mlcloud.lattice import subjects

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


def link_to_json(link: LinkDefinition) -> dict[str, Any]:
    return msgspec.to_builtins(link)
