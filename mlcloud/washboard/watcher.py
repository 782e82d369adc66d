"""The washboard's side of the lattice: one NATS connection, the loops that feed the state, the actions.

:class:`LatticeWatcher` connects to NATS in the background and keeps trying for as long as the
washboard runs (a washboard started before NATS, or left open while NATS restarts, recovers by
itself). It subscribes to ``wasmbus.evt.{lattice}``, polls the control interface (hosts,
inventories, links) every ``poll_interval`` seconds, asks each mlinference link's provider for
its models' status (and, where a route is split, the api's report of its experiment, over HTTP:
``GET /experiments`` at ``settings.http_address``), and wakes those loops early when an event
says something changed. Changes
are pushed to subscribers (the page's server-sent-event streams) as the sections that changed,
coalesced over a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mlcloud.errors import ComponentNotFound, LatticeUnavailable, MLCloudError, RequestError
from mlcloud.interfaces import RepositoryModel
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import credentials_for
from mlcloud.lattice.connect import connect
from mlcloud.lattice.control import (
    DEFAULT_LINK_NAME,
    ActorReply,
    HostInventory,
    ProviderReply,
    RepositoryCommand,
    RepositoryOp,
)
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.events import decode_event
from mlcloud.lattice.lifecycle import Service, cancel_and_wait
from mlcloud.lattice.natserrors import nats_errors
from mlcloud.settings import Settings
from mlcloud.washboard.state import LatticeState, Refresh, Section

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 2.0
FLUSH_DELAY = 0.05  # coalesce bursts of events into one push
SUBSCRIBER_BACKLOG = 256
MAX_SCALE = 64
CONNECT_ATTEMPT = 5.0  # seconds one attempt at the first connection may take before the page hears why


class Subscriber:
    """One page's stream: encoded messages, or ``None`` when the stream should end."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_BACKLOG + 1)

    def offer(self, message: bytes | None) -> bool:
        """Queue a message; a page too slow to keep up is told to reconnect (and gets a snapshot)."""
        if self.queue.qsize() >= SUBSCRIBER_BACKLOG and message is not None:
            self.queue.put_nowait(None)
            return False
        self.queue.put_nowait(message)
        return True

    async def get(self) -> bytes | None:
        return await self.queue.get()


class LatticeWatcher(Service):
    """Start it as an async context manager (or ``start()`` … ``stop()``): it starts once."""

    def __init__(self, settings: Settings, *, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 models_interval: float | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.poll_interval = poll_interval
        self.models_interval = models_interval or poll_interval
        self.state = LatticeState(settings.lattice, settings.effective_nats_url)
        self.nc: NATS | None = None
        self.ctl: CtlClient | None = None
        self._subscribers: set[Subscriber] = set()
        self._last_sent: dict[Section, bytes] = {}
        self._feed_sent = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._wake_ctl = asyncio.Event()
        self._wake_models = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------------

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """The loops start at once; the connection comes when NATS is there (the page says so meanwhile)."""
        self.state.set_connection(False, f"connecting to NATS at {self.settings.effective_nats_url}")
        stack.push_async_callback(self._close_connection)
        stack.callback(self.close_streams)
        self._tasks = [
            asyncio.create_task(self._connect(), name="washboard:connect"),
            asyncio.create_task(self._poll_ctl(), name="washboard:poll-ctl"),
            asyncio.create_task(self._poll_models(), name="washboard:poll-models"),
        ]
        stack.push_async_callback(lambda: cancel_and_wait(self._tasks))

    async def _close_connection(self) -> None:
        self._stopping = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(LatticeUnavailable), nats_errors("closing the washboard's connection"):
                await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _connect(self) -> None:
        """Connect, trying again for as long as the washboard runs; then follow the lattice's events."""
        url = self.settings.effective_nats_url
        while True:
            try:
                nc = await connect(
                    url, name="mlcloud-washboard", credentials=credentials_for(self.settings), timeout=CONNECT_ATTEMPT,
                    error_cb=self._on_nats_error,
                    disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
                break
            except MLCloudError as err:  # unreachable, or a malformed URL: say so on the page
                log.warning("washboard cannot connect to NATS: %s", err.message)
                self.state.set_connection(False, err.message)
                self._schedule_flush()
        self.nc = nc
        self.ctl = CtlClient(nc, self.settings.lattice, timeout=self.settings.ctl_timeout)
        with nats_errors("following lattice events", subjects.events(self.settings.lattice)):
            await nc.subscribe(subjects.events(self.settings.lattice), cb=self._on_event)
        self.state.set_connection(True)
        log.info("washboard connected to NATS at %s (lattice %r)", url, self.settings.lattice)
        self.wake(Refresh.INVENTORY | Refresh.MODELS)
        self._schedule_flush()

    async def _on_nats_error(self, exc: Exception) -> None:
        if not self.connected:
            self.state.set_connection(
                False, f"NATS at {self.settings.effective_nats_url} unreachable: {exc or type(exc).__name__}"
            )
            self._schedule_flush()

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("washboard lost NATS; reconnecting")
            self.state.set_connection(False, "NATS connection lost; reconnecting")
            self._schedule_flush()

    async def _on_reconnected(self) -> None:
        log.info("washboard reconnected to NATS")
        self.state.set_connection(True)
        self.wake(Refresh.INVENTORY | Refresh.MODELS)
        self._schedule_flush()

    async def _on_closed(self) -> None:
        if not self._stopping:
            self.state.set_connection(False, "NATS connection closed")
            self._schedule_flush()

    # ---- feeding the state -------------------------------------------------------------

    async def _on_event(self, msg: Msg) -> None:
        try:
            wants = self.state.apply_event(decode_event(msg.data))
        except MLCloudError as err:  # one malformed (or newer) event must not stop the feed
            log.warning("ignored a lattice event: %s", err.message)
            return
        self.wake(wants)
        self._schedule_flush()

    def wake(self, what: Refresh) -> None:
        if Refresh.INVENTORY in what or Refresh.LINKS in what:
            self._wake_ctl.set()
        if Refresh.MODELS in what:
            self._wake_models.set()

    async def _sleep_or_wake(self, event: asyncio.Event, interval: float) -> None:
        # Not wait_for: on Python 3.11 it can swallow the cancellation that ends this loop (see cancel_and_wait).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await event.wait()
        # Events come in bursts (stopped, started, linked): one refresh answers them all.
        await asyncio.sleep(0.05)
        event.clear()

    async def _poll_ctl(self) -> None:
        while True:
            if self.connected:
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("control-interface poll failed", exc_info=True)
            await self._sleep_or_wake(self._wake_ctl, self.poll_interval)

    async def _poll_models(self) -> None:
        while True:
            if self.connected:
                try:
                    await self.refresh_models()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("model status poll failed", exc_info=True)
            await self._sleep_or_wake(self._wake_models, self.models_interval)

    async def refresh(self) -> None:
        """Hosts, each host's inventory and the link definitions, from the control interface."""
        ctl = self.ctl
        assert ctl is not None
        hosts = await ctl.get_hosts(wait=min(0.5, self.settings.ctl_timeout))
        inventories = await asyncio.gather(*(ctl.get_inventory(h.id) for h in hosts), return_exceptions=True)
        self.state.apply_hosts(hosts)
        for host, inventory in zip(hosts, inventories, strict=True):
            if isinstance(inventory, HostInventory):
                self.state.apply_inventory(inventory)
            else:
                log.info("inventory of host %s unavailable: %s", host.id, inventory)
        if hosts:  # link definitions are served by hosts; with none up, keep what we knew
            try:
                self.state.apply_links(await ctl.get_links())
            except MLCloudError as err:
                log.info("link definitions unavailable: %s", err.message)
        self.state.mark_polled()
        self._schedule_flush()

    async def refresh_models(self) -> None:
        """Ask every host for the models of the mlinference providers it runs (the host asks them as
        itself: the washboard has control rights only, and never calls as an actor)."""
        assert self.ctl is not None
        answers = await asyncio.gather(*(self.ctl.get_models(h) for h in list(self.state.hosts)),
                                       return_exceptions=True)
        for host_id, answer in zip(list(self.state.hosts), answers, strict=False):
            if isinstance(answer, BaseException):
                log.info("models of host %s unavailable: %s", host_id, answer)
                continue
            for entry in answer:
                self.state.apply_models(entry.actor_id, entry.link_name, entry.provider_id, entry.models, entry.error)
        await self.refresh_experiments()
        self._schedule_flush()

    async def refresh_experiments(self) -> None:
        """The api's report of every split (the api owns the posteriors; the washboard has no
        JetStream rights); nothing is asked while no link value holds a split."""
        if not self.state.split_routes():
            self.state.apply_experiments([])
            return
        from mlcloud.deployment import experiments_async

        try:
            self.state.apply_experiments(await experiments_async(settings=self.settings))
        except MLCloudError as err:
            self.state.apply_experiments(None, err.message)

    # ---- pushing to pages --------------------------------------------------------------

    def subscribe(self) -> tuple[Subscriber, dict[str, Any]]:
        """A new stream and the snapshot it starts from (taken in the same tick: no gap)."""
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        return subscriber, self.state.snapshot()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close_streams(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(None)
        self._subscribers.clear()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._stopping:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        sections = {}
        for section in sorted(self.state.take_dirty()):
            view = self.state.view(section)
            encoded = json.dumps(view, sort_keys=True).encode()
            if self._last_sent.get(section) != encoded:
                self._last_sent[section] = encoded
                sections[str(section)] = view
        feed = self.state.feed_since(self._feed_sent)
        if feed:
            self._feed_sent = feed[-1]["seq"]
        if not sections and not feed:
            return
        message = json.dumps({"server_time": self.state.clock(), "sections": sections, "feed": feed}).encode()
        for subscriber in list(self._subscribers):
            if not subscriber.offer(message):
                self._subscribers.discard(subscriber)

    # ---- actions -----------------------------------------------------------------------

    def _require_ctl(self) -> CtlClient:
        if not self.connected or self.ctl is None:
            raise LatticeUnavailable(f"the washboard is not connected to NATS at {self.settings.effective_nats_url}")
        return self.ctl

    def _hosts_running(self, kind: str, component_id: str) -> list[str]:
        return [host_id for host_id, inventory in self.state.inventories.items()
                if any(c.id == component_id for c in (inventory.actors if kind == "actors" else inventory.providers))]

    async def scale_actor(self, actor_id: str, count: Any, host_id: str | None = None) -> ActorReply:
        ctl = self._require_ctl()
        try:
            count = int(count)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"count must be a whole number, got {count!r}") from exc
        if not 0 <= count <= MAX_SCALE:
            raise RequestError(f"count must be between 0 and {MAX_SCALE}, got {count}")
        if not host_id:
            hosts = self._hosts_running("actors", actor_id)
            if len(hosts) != 1:
                raise RequestError(f"actor {actor_id} runs on {len(hosts)} hosts; say which host to scale on")
            host_id = hosts[0]
        try:
            reply = await ctl.scale_actor(host_id, actor_id, count)
        finally:
            self.wake(Refresh.INVENTORY)
        return reply

    async def model_repository(self, op: RepositoryOp, actor_id: str, provider_id: str, link_name: str,
                               model: str, bindle_id: str = "") -> list[RepositoryModel]:
        """Load or unload a route of an mlinference link, as ``mlcloud ctl model`` and ``/v2/repository`` do."""
        ctl = self._require_ctl()
        if not (actor_id and provider_id and model):
            raise RequestError("actor_id, provider_id and the model's route are required")
        hosts = self._hosts_running("providers", provider_id)
        if not hosts:
            raise ComponentNotFound(f"the washboard sees provider {provider_id} on no host")
        command = RepositoryCommand(op=op, actor_id=actor_id, provider_id=provider_id,
                                    link_name=link_name or DEFAULT_LINK_NAME, model=model, bindle_id=bindle_id)
        try:
            return await ctl.model_repository(hosts[0], command)
        finally:
            self.wake(Refresh.MODELS)

    async def stop_provider(self, provider_id: str, host_id: str, link_name: str = DEFAULT_LINK_NAME) -> ProviderReply:
        ctl = self._require_ctl()
        if not host_id:
            raise RequestError("host_id is required to stop a provider")
        try:
            reply = await ctl.stop_provider(host_id, provider_id, link_name or DEFAULT_LINK_NAME)
        finally:
            self.wake(Refresh.INVENTORY | Refresh.MODELS)
        return reply

    async def start_provider(self, provider_id: str, host_id: str, link_name: str = DEFAULT_LINK_NAME,
                             ref: str | None = None, config: dict[str, Any] | None = None) -> ProviderReply:
        """Start a provider again with the reference, link name and config it last ran with."""
        ctl = self._require_ctl()
        if not host_id:
            raise RequestError("host_id is required to start a provider")
        link_name = link_name or DEFAULT_LINK_NAME
        launch = self.state.launch_spec(host_id, provider_id, link_name)
        if not ref:
            if launch is None:
                raise ComponentNotFound(
                    f"the washboard has not seen provider {provider_id} ({link_name}) on host {host_id}; "
                    "give its reference to start it"
                )
            ref = launch.ref
        if config is None:
            config = launch.config if launch is not None else {}
        if not isinstance(config, dict):
            raise RequestError("config must be a JSON object")
        try:
            reply = await ctl.start_provider(host_id, ref, link_name, config)
        finally:
            self.wake(Refresh.INVENTORY | Refresh.MODELS)
        return reply
