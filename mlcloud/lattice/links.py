"""Link definitions (actor ↔ provider + config values), kept in a JetStream key-value bucket.

A link is identified by (actor, contract, link name): an actor has at most one provider per
contract and link name. Because links live in JetStream, a provider or host that (re)starts
reads every link back; :meth:`LinkStore.watch` yields the existing links, then each change.

A process whose NATS server has no JetStream (a board's leaf node, whose hub holds the lattice's
JetStream) follows the links read-only through core NATS instead (:class:`LinkFeed`). A board's
host reads them from the hub's hosts: the control interface's ``linkdefs.get``, then the
``linkdef_set`` and ``linkdef_deleted`` events. Its instances may neither send control requests nor
follow the lattice's events (mlcloud/host/permissions.py), so the host relays the links to them
(:class:`LinkRelay`) on its own subject, as wasmCloud's host puts links to its providers; they
get link definitions and nothing else, and an instance starting while the hub is out of reach
still gets the links its host knows. :func:`open_links` picks whichever is reachable.

On a NATS cluster the bucket is replicated: created on ``min(3, nodes)`` servers
(:func:`link_replicas`), and a host that finds it on fewer (made before the cluster grew, or while
a node was down) raises its replicas. Any one node may then die without losing a link; writes
wait for the bucket's new leader (JetStream elects one within seconds), reads and watches resume
on another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from mlcloud.errors import ConfigError, LatticeUnavailable, MLCloudError, NotFound
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import INBOX
from mlcloud.lattice.control import DEFAULT_LINK_NAME, CtlReply, EventName, LinkDefinition, LinkList
from mlcloud.lattice.ctl_client import Empty, ctl_request
from mlcloud.lattice.events import cloud_event, decode_event
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

# A watch's consumer is removed by the server this long (s) after its connection is gone (nats-py's value).
WATCH_INACTIVE_THRESHOLD = 5 * 60.0
# How long a following watch waits in silence before it asks whether its consumer still exists: a
# restarted nats-server has forgotten it (ordered consumers live in memory), and nats-py does not
# notice, so without the check a watch would miss every later change without a word.
WATCH_CHECK_INTERVAL = 2.0
# Copies of the links bucket on a NATS cluster of at least this many nodes: one node may die (three
# keep a quorum of two), as a JetStream R3 stream.
LINK_REPLICAS = 3
# JetStream's err_codes: a stream of that name exists with another config; it cannot place that
# many replicas now (a node is down, or the meta leader has not heard from it yet); a node could not
# make the stream's store (it had not loaded the account yet, in operator mode: it has now).
STREAM_NAME_IN_USE = 10058
NO_SUITABLE_PEERS = 10005
STORE_FAILED = 10049
PLACEMENT_WAIT = 3.0  # seconds a new bucket waits for its replicas' nodes before it takes fewer


def link_key(actor_id: str, contract_id: str, link_name: str) -> str:
    contract = hashlib.sha256(contract_id.encode()).hexdigest()[:16]
    return f"linkdefs.{actor_id}.{contract}.{subjects.check_token(link_name, 'link name')}"


def key_of(link: LinkDefinition) -> str:
    return link_key(link.actor_id, link.contract_id, link.link_name)


def link_replicas(nc: NATS) -> int:
    """How many copies of the links bucket to ask for: :data:`LINK_REPLICAS` when the server ``nc``
    is connected to is in a cluster (its INFO, which nats-py keeps privately, names one), else one.
    A cluster that cannot place them all (fewer nodes, or one down) gets fewer (:meth:`LinkStore._create`)."""
    return LINK_REPLICAS if nc._server_info.get("cluster") else 1


class LinkEvent(msgspec.Struct, frozen=True):
    link: LinkDefinition
    deleted: bool = False


class LinkStore:
    """The lattice's link definitions; every host, actor and provider opens its own."""

    writable = True

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self.prefix = f"$KV.{bucket}."  # the subject of key k is prefix + k

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
                kv = await cls._create(js, bucket, link_replicas(nc))
            except nats.js.errors.BadBucketError as exc:
                raise ConfigError(f"the JetStream stream of bucket {bucket} is not a key-value bucket; "
                                  "remove that stream or use another lattice name") from exc
        return cls(js, kv, bucket)

    @staticmethod
    async def _create(js: JetStreamContext, bucket: str, replicas: int) -> KeyValue:
        deadline = time.monotonic() + PLACEMENT_WAIT
        while True:
            try:
                # Two hosts may race to create it; creating an identical bucket is idempotent.
                return await js.create_key_value(bucket=bucket, history=1, replicas=replicas,
                                                 description="mlcloud lattice data")
            except nats.js.errors.APIError as exc:
                if exc.err_code == STREAM_NAME_IN_USE:
                    return await js.key_value(bucket)  # another host made it, with other replicas: see replicate()
                if exc.err_code not in (NO_SUITABLE_PEERS, STORE_FAILED):
                    raise
                if time.monotonic() > deadline:
                    if replicas == 1:
                        raise
                    log.warning("JetStream cannot place %d replicas of the links bucket %s now (%s); "
                                "making it with %d (a host raises them later)", replicas, bucket, exc.description,
                                replicas - 1)
                    replicas -= 1
                await asyncio.sleep(0.1)

    async def replicate(self, replicas: int) -> None:
        """Keep the bucket on at least ``replicas`` servers: raise its replicas when it has fewer
        (a host does, as it may change the stream; if the cluster cannot place them now, say so)."""
        stream = f"KV_{self.bucket}"
        with nats_errors("reading the link store's replicas", stream):
            config = (await self.js.stream_info(stream)).config
        have = config.num_replicas or 1
        if have >= replicas:
            return
        try:
            with nats_errors("replicating the link store", stream):
                await self.js.update_stream(dataclasses.replace(config, num_replicas=replicas))
        except MLCloudError as err:
            log.warning("the links bucket %s has %d replica(s), fewer than the %d this NATS cluster could keep, "
                        "and raising them failed: %s", self.bucket, have, replicas, err.message)
            return
        log.info("the links bucket %s now has %d replicas (had %d)", self.bucket, replicas, have)

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
        """Every current link, then (when ``follow``) ``None`` once, then each put and delete.

        Reads the bucket's stream with an ordered consumer rather than nats-py's ``KeyValue.watch``,
        whose end-of-current-values marker can come before the values: it is sent when the consumer's
        info shows nothing pending and the client has *received* nothing yet, which is also the case
        when the server has sent every value and the messages are still on their way (seen under load
        as an empty link list). Here, as in the Go client, the current values end with the first
        message the server sent with nothing pending after it, or at once if the consumer's info shows
        nothing delivered and nothing pending.
        """
        with nats_errors("watching the links", "linkdefs.>"):
            sub = await self.js.subscribe(
                f"{self.prefix}linkdefs.>", stream=f"KV_{self.bucket}", ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=WATCH_INACTIVE_THRESHOLD,
            )
        known: dict[str, LinkDefinition] = {}
        try:
            with nats_errors("watching the links", "linkdefs.>"):
                info = await sub.consumer_info()
            current = bool(info.num_pending or (info.delivered and info.delivered.consumer_seq))
            if not current:
                if not follow:
                    return
                yield None
            while True:
                try:
                    msg = await sub.next_msg(timeout=WATCH_CHECK_INTERVAL)
                except nats.errors.TimeoutError:
                    with nats_errors("checking the watch of the links", "linkdefs.>"):
                        await sub.consumer_info()  # gone after a server restart: raised, so the caller re-watches
                    continue
                key = msg.subject[len(self.prefix):]
                if (msg.headers or {}).get(KV_OP) in (KV_DEL, KV_PURGE):
                    gone = known.pop(key, None)
                    if gone is not None:
                        yield LinkEvent(gone, deleted=True)
                else:
                    link = msgspec.json.decode(msg.data, type=LinkDefinition)
                    known[key] = link
                    yield LinkEvent(link)
                if current and msg.metadata.num_pending == 0:  # the last of the current values
                    current = False
                    if not follow:
                        return
                    yield None
        finally:
            # A connection that closed under the watch took its subscription with it; raising here
            # would replace the error (or cancellation) that ended the watch.
            with contextlib.suppress(LatticeUnavailable), nats_errors("ending the watch of the links", "linkdefs.>"):
                await sub.unsubscribe()


class LinkFeed:
    """Links followed read-only over core NATS, for processes without JetStream: from the lattice's
    hosts (the control interface and the events), or with ``host_id`` from that host's :class:`LinkRelay`."""

    writable = False

    def __init__(self, nc: NATS, lattice: str, timeout: float = 5.0, *, host_id: str | None = None) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout
        if host_id is None:
            self.get_subject, self.events_subject = subjects.ctl_links(lattice, "get"), subjects.events(lattice)
        else:
            self.events_subject = subjects.host_links(lattice, host_id)
            self.get_subject = f"{self.events_subject}.get"

    async def all(self) -> list[LinkDefinition]:
        reply = await ctl_request(self.nc, self.get_subject, Empty(), LinkList, timeout=self.timeout)
        return reply.links

    async def watch(self, *, follow: bool = True) -> AsyncIterator[LinkEvent | None]:
        """As :meth:`LinkStore.watch`; events that race the first read are applied after it.

        Any instance may publish a lattice event, so a link event there is only a hint: the links
        are read again from a host (instances cannot answer control requests). Only hosts may
        publish on a relay's subject, so its events are applied as they come.
        """
        trusted = self.events_subject != subjects.events(self.lattice)
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
            with nats_errors("following link events", self.events_subject):
                sub = await self.nc.subscribe(self.events_subject, cb=on_event)
        try:
            known = {key_of(link): link for link in await self.all()}
            for link in known.values():
                yield LinkEvent(link)
            if not follow:
                return
            yield None
            while True:
                event = await queue.get()
                if trusted:
                    yield event
                    continue
                while not queue.empty():  # one read answers every hint so far
                    queue.get_nowait()
                fresh = {key_of(link): link for link in await self.all()}
                for key in known.keys() - fresh.keys():
                    yield LinkEvent(known[key], deleted=True)
                for key, link in fresh.items():
                    if known.get(key) != link:
                        yield LinkEvent(link)
                known = fresh
        finally:
            if sub is not None:
                with nats_errors("leaving link events", self.events_subject):
                    await sub.unsubscribe()


class LinkRelay:
    """A board host's links, passed on to its instances: every link on request (to an inbox only,
    so the host never publishes where an instance points it), then each change as a link event."""

    def __init__(self, nc: NATS, lattice: str, host_id: str, feed: LinkFeed) -> None:
        self.nc = nc
        self.host_id = host_id
        self.feed = feed
        self.subject = subjects.host_links(lattice, host_id)
        self._links: dict[str, LinkDefinition] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def __aenter__(self) -> LinkRelay:
        self._task = asyncio.create_task(self._follow(), name="link-relay")
        with nats_errors("serving the links to this host's instances", self.subject):
            self._sub = await self.nc.subscribe(f"{self.subject}.get", cb=self._answer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(MLCloudError), nats_errors("ending the link relay", self.subject):
                await self._sub.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply.startswith(f"{INBOX}."):
            log.warning("link request with reply subject %r ignored: links go to inboxes only", msg.reply)
            return
        reply: CtlReply[LinkList]
        try:
            async with asyncio.timeout(self.feed.timeout):
                await self._ready.wait()
            reply = CtlReply(response=LinkList(links=list(self._links.values())))
        except TimeoutError:
            reply = CtlReply.failed(LatticeUnavailable("this host has not read the lattice's links yet"))
        with contextlib.suppress(MLCloudError), nats_errors("a link reply", msg.reply):
            await msg.respond(msgspec.json.encode(reply))

    async def _publish(self, link: LinkDefinition, deleted: bool) -> None:
        name = EventName.LINKDEF_DELETED if deleted else EventName.LINKDEF_SET
        with contextlib.suppress(MLCloudError), nats_errors("relaying a link", self.subject):
            await self.nc.publish(self.subject, msgspec.json.encode(cloud_event(name, self.host_id, link)))

    async def _follow(self) -> None:
        """Keep ``_links`` current; after a re-watch (NATS reconnected) relay what changed meanwhile."""
        while True:
            replayed: dict[str, LinkDefinition] | None = {}
            try:
                async for event in self.feed.watch(follow=True):
                    if event is None:
                        assert replayed is not None
                        for key in self._links.keys() - replayed.keys():
                            await self._publish(self._links.pop(key), deleted=True)
                        for key, link in replayed.items():
                            if self._links.get(key) != link:
                                self._links[key] = link
                                await self._publish(link, deleted=False)
                        replayed = None
                        self._ready.set()
                    elif replayed is not None:
                        replayed[key_of(event.link)] = event.link
                    else:
                        if event.deleted:
                            self._links.pop(key_of(event.link), None)
                        else:
                            self._links[key_of(event.link)] = event.link
                        await self._publish(event.link, event.deleted)
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS reconnecting: re-watch; the watch replays current links
                log.warning("link relay interrupted; retrying", exc_info=True)
                await asyncio.sleep(1)


async def open_links(nc: NATS, lattice: str, host_id: str | None = None) -> LinkStore | LinkFeed:
    """The JetStream link store, or a read-only :class:`LinkFeed` where JetStream is not reachable:
    from the lattice's hosts, or for an instance (``host_id``: its host's) from its host's relay."""
    store = await LinkStore.open(nc, lattice)
    if store is None:
        log.info("no JetStream on this NATS server: following links %s",
                 "through the control interface" if host_id is None else "through this instance's host")
        return LinkFeed(nc, lattice, host_id=host_id)
    if host_id is None:  # a host: it keeps the bucket replicated (an instance may not change the stream)
        await store.replicate(link_replicas(nc))
    return store
