"""The host: one process per machine that runs actor and provider instances on the lattice.

It has an nkey identity (N…) and labels, answers the control interface
(``wasmbus.ctl.{lattice}.…``, handlers named ``handle_<noun>_<verb>``), publishes events and
heartbeats, supervises its instances and health-checks its providers. Link definitions are
not held here but in the lattice's key-value bucket, so a host restart loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mlcloud import __version__, metrics
from mlcloud.component import ComponentKind
from mlcloud.errors import (
    ComponentNotFound,
    ConfigError,
    HostError,
    LatticeUnavailable,
    MalformedMessage,
    MLCloudError,
    RequestError,
)
from mlcloud.experiments import make_buckets
from mlcloud.host.artifacts import ResolvedComponent, resolve
from mlcloud.host.permissions import instance_permissions, served_targets
from mlcloud.host.spec import HEALTH_OP, InstanceSpec
from mlcloud.host.supervisor import Instance
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.interfaces import (
    LOAD_MODEL,
    MLINFERENCE,
    MODEL_STATUS,
    REPOSITORY_INDEX,
    UNLOAD_MODEL,
    ModelInfo,
    ModelStatusRequest,
    RepositoryModel,
    RepositoryRequest,
)
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import Account, account_for, credentials_for
from mlcloud.lattice.connect import connect, flush, leave
from mlcloud.lattice.control import (
    DEFAULT_LINK_NAME,
    ActorReply,
    ComponentInfo,
    ComponentRefused,
    CtlReply,
    Empty,
    EventName,
    HealthReport,
    HostHeartbeat,
    HostInfo,
    HostInventory,
    HostStarted,
    HostStopped,
    InstanceChanged,
    InstanceStatus,
    LinkDefinition,
    LinkId,
    LinkList,
    LinkModels,
    LinkPutReply,
    MetricsReport,
    ModelList,
    ProviderInfo,
    ProviderReply,
    RepositoryCommand,
    RepositoryOp,
    RepositoryReply,
    ScaleActor,
    StartActor,
    StartProvider,
    StopActor,
    StopProvider,
)
from mlcloud.lattice.events import EventPublisher
from mlcloud.lattice.lifecycle import Service, cancel_and_wait
from mlcloud.lattice.links import LinkFeed, LinkRelay, LinkStore, key_of, link_replicas, open_links
from mlcloud.lattice.natserrors import nats_errors
from mlcloud.lattice.rpc import Died, RpcClient
from mlcloud.lattice.scrape import answer_scrapes
from mlcloud.settings import Settings

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=msgspec.Struct)
CtlHandler = Callable[[bytes], Awaitable[msgspec.Struct]]


def default_labels() -> dict[str, str]:
    return {"arch": platform.machine(), "os": platform.system().lower(), "hostname": socket.gethostname()}


@dataclass
class Component:
    """A component this host runs, with its instances."""

    resolved: ResolvedComponent
    link_name: str = DEFAULT_LINK_NAME
    config: dict[str, Any] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)

    def describe(self) -> ComponentInfo:
        r = self.resolved
        info = ComponentInfo(
            id=r.key, name=r.name, image_ref=r.ref, digest=r.digest, version=r.manifest.version,
            revision=r.manifest.revision, capabilities=list(r.capabilities),
            instances=[i.describe() for i in self.instances],
        )
        return info

    def describe_provider(self) -> ProviderInfo:
        info = self.describe()
        return ProviderInfo(**msgspec.structs.asdict(info), contract_id=self.resolved.manifest.contract,
                            link_name=self.link_name, config=self.config)


class Host(Service):
    """Start it as an async context manager (or ``start()`` … ``stop()``): it starts once.

    Start order (stop undoes it in reverse): NATS connection, link store, event publisher,
    components (stopped: actors first, they call providers), control subscriptions, background
    loops, ``host_started`` (``host_stopped`` on the way out).
    """

    def __init__(self, settings: Settings, labels: dict[str, str] | None = None, *, key: KeyPair | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.key = key or KeyPair.generate(KeyKind.HOST)
        self.id = self.key.public_key
        self.labels = {**default_labels(), **(labels or {})}
        self.started_at = time.time()
        self.actors: dict[str, Component] = {}
        self.providers: dict[tuple[str, str], Component] = {}  # (key, link name)
        self.nc: NATS | None = None
        self.account: Account | None = None  # mints each instance's NATS credentials
        self.links: LinkStore | LinkFeed | None = None
        self.events: EventPublisher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # serialises changes to what runs here
        self.metrics = metrics.host_registry(self.inventory)

    # ---- lifecycle ---------------------------------------------------------------------

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        lattice = self.settings.lattice
        self.account = account_for(self.settings)
        self.nc = nc = await connect(self.settings.effective_nats_url, name=f"host/{self.id[:8]}",
                                     credentials=credentials_for(self.settings, "host.creds"))
        stack.push_async_callback(self._leave_lattice, nc)
        self.links = await open_links(nc, lattice)
        if self.links.writable:  # where the links live, so do the api actor's experiments
            try:
                await make_buckets(nc.jetstream(), lattice, link_replicas(nc))
            except MLCloudError as err:  # the lattice serves on; only feedback on split routes fails
                log.warning("the experiments' buckets are not there: %s", err.message)
        if isinstance(self.links, LinkFeed):  # its instances may not follow the hub's hosts themselves
            await stack.enter_async_context(LinkRelay(nc, lattice, self.id, self.links))
        self.events = events = EventPublisher(nc, lattice, self.id)
        stack.push_async_callback(self._stop_all_components)
        handlers: dict[str, CtlHandler] = {
            subjects.ctl_ping_hosts(lattice): _handler(Empty, self.handle_host_ping),
            subjects.ctl_inventory(lattice, self.id): _handler(Empty, self.handle_inventory_get),
            subjects.ctl_models(lattice, self.id): _handler(Empty, self.handle_models_get),
            subjects.ctl_command(lattice, self.id, "la"): _handler(StartActor, self.handle_actor_start),
            subjects.ctl_command(lattice, self.id, "sa"): _handler(StopActor, self.handle_actor_stop),
            subjects.ctl_command(lattice, self.id, "scale"): _handler(ScaleActor, self.handle_actor_scale),
            subjects.ctl_command(lattice, self.id, "lp"): _handler(StartProvider, self.handle_provider_start),
            subjects.ctl_command(lattice, self.id, "sp"): _handler(StopProvider, self.handle_provider_stop),
            subjects.ctl_command(lattice, self.id, "stop"): _handler(Empty, self.handle_host_stop),
            subjects.ctl_command(lattice, self.id, "repo"): _handler(RepositoryCommand, self.handle_model_repository),
        }
        queues = dict.fromkeys(handlers, "")
        # Without JetStream (a board's leaf node) the hub's hosts answer for the links.
        if self.links.writable:
            link_handlers = {
                "put": _handler(LinkDefinition, self.handle_link_put),
                "del": _handler(LinkId, self.handle_link_del),
                "get": _handler(Empty, self.handle_link_get),
            }
            for verb, handler in link_handlers.items():
                handlers[subjects.ctl_links(lattice, verb)] = handler
                queues[subjects.ctl_links(lattice, verb)] = "mlcloud.links"
        # Control requests in flight end before the components stop (they may be starting some),
        # and after the subscriptions are gone, so that no new one starts an instance nobody stops.
        stack.push_async_callback(lambda: cancel_and_wait(list(self._background)))
        with nats_errors("subscribing to the control interface", subjects.ctl_prefix(lattice)):
            for subject, handler in handlers.items():
                sub = await nc.subscribe(subject, queue=queues[subject], cb=self._ctl_callback(handler))
                stack.push_async_callback(_unsubscribe, sub)
            sub = await nc.subscribe(subjects.instance_ready(lattice, self.id), cb=self._on_instance_ready)
            stack.push_async_callback(_unsubscribe, sub)
            stack.push_async_callback((await answer_scrapes(nc, lattice, self.metrics_report)).stop)
            await flush(nc)  # a started host answers control requests from any connection at once
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._health_checks(), name="health-checks"),
        ]
        stack.push_async_callback(lambda: cancel_and_wait(self._tasks))
        await events.publish(EventName.HOST_STARTED, HostStarted(host_id=self.id, labels=self.labels,
                                                                 version=__version__))
        log.info("host %s started on lattice %r (NATS %s)", self.id, lattice, self.settings.effective_nats_url)
        if self.settings.dev:
            log.warning("host %s is in development mode: it runs unsigned local component folders", self.id)

    async def _stop_all_components(self) -> None:
        """Actors first (they call providers), then providers."""
        async with self._lock:
            await asyncio.gather(*(self._stop_component(c) for c in list(self.actors.values())))
            self.actors.clear()
            await asyncio.gather(*(self._stop_component(c) for c in list(self.providers.values())))
            self.providers.clear()

    async def _leave_lattice(self, nc: NATS) -> None:
        """Say ``host_stopped`` (when the publisher was made), then leave: drain, or close while NATS is away."""
        if self.events is not None:
            await self.events.publish(EventName.HOST_STOPPED, HostStopped(host_id=self.id))
        await leave(nc, f"host {self.id[:8]}")
        log.info("host %s stopped", self.id)

    # ---- control interface -------------------------------------------------------------

    def _ctl_callback(self, handler: CtlHandler) -> Callable[[Msg], Awaitable[None]]:
        async def callback(msg: Msg) -> None:
            self._spawn(self._answer_ctl(handler, msg), f"ctl:{msg.subject}")

        return callback

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in the background, kept referenced until done, its failure logged."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _answer_ctl(self, handler: CtlHandler, msg: Msg) -> None:
        reply: CtlReply[Any]
        try:
            reply = CtlReply(response=await handler(msg.data))
        except MLCloudError as err:
            reply = CtlReply.failed(err)
        except Exception as exc:
            log.exception("control request on %s failed", msg.subject)
            reply = CtlReply.failed(MLCloudError(f"{type(exc).__name__}: {exc}"))
        if msg.reply:
            with contextlib.suppress(LatticeUnavailable), nats_errors("a control reply", msg.reply):
                await msg.respond(msgspec.json.encode(reply))

    async def handle_host_ping(self, request: Empty) -> HostInfo:
        return self.summary()

    async def handle_inventory_get(self, request: Empty) -> HostInventory:
        return self.inventory()

    async def handle_models_get(self, request: Empty) -> ModelList:
        """Ask each mlinference provider here, as this host, for the models of each of its links."""
        assert self.nc is not None and self.links is not None
        rpc = RpcClient(self.nc, caller=self.id, timeout=self.settings.ctl_timeout)
        links = await self.links.all()

        async def status(component: Component, link: LinkDefinition) -> LinkModels:
            entry = LinkModels(actor_id=link.actor_id, provider_id=link.provider_id, link_name=link.link_name)
            target = subjects.provider_target(self.settings.lattice, MLINFERENCE, link.provider_id, link.link_name)
            try:
                entry.models = await rpc.call(target, MODEL_STATUS.name, ModelStatusRequest(actor=link.actor_id),
                                              list[ModelInfo])
            except MLCloudError as err:
                entry.error = f"{err.kind}: {err.message}"
            return entry

        asked = [status(c, link) for (key, link_name), c in self.providers.items()
                 if c.resolved.manifest.contract == MLINFERENCE
                 for link in links if (link.provider_id, link.link_name) == (key, link_name)]
        return ModelList(links=list(await asyncio.gather(*asked)))

    async def handle_model_repository(self, request: RepositoryCommand) -> RepositoryReply:
        """A model repository operation on a provider here, asked as this host for the link's actor:
        the CLI and the washboard reach the same provider operations as ``/v2/repository``."""
        assert self.nc is not None
        if (request.provider_id, request.link_name) not in self.providers:
            raise ComponentNotFound(f"provider {request.provider_id} ({request.link_name}) does not run on this host")
        target = subjects.provider_target(self.settings.lattice, MLINFERENCE, request.provider_id, request.link_name)
        rpc = RpcClient(self.nc, caller=self.id, timeout=self.settings.rpc_timeout)
        asked = RepositoryRequest(model=request.model, bindle_id=request.bindle_id, actor=request.actor_id)
        if request.op is RepositoryOp.INDEX:
            return RepositoryReply(models=await rpc.call(target, REPOSITORY_INDEX.name, asked, list[RepositoryModel]))
        op = LOAD_MODEL if request.op is RepositoryOp.LOAD else UNLOAD_MODEL
        return RepositoryReply(models=[await rpc.call(target, op.name, asked, RepositoryModel)])

    async def handle_host_stop(self, request: Empty) -> Empty:
        # Answer first, then stop.
        asyncio.get_running_loop().call_later(0.1, lambda: self._spawn(self.stop(), "host-stop"))
        return Empty()

    async def handle_actor_start(self, request: StartActor) -> ActorReply:
        if request.count < 1:
            raise RequestError("count must be 1 or more")
        resolved = await self._resolve(_required(request.actor_ref, "actor_ref"), expect=ComponentKind.ACTOR)
        async with self._lock:
            component = self.actors.get(resolved.key)
            if component is None:
                component = self.actors[resolved.key] = Component(resolved)
            target = len(component.instances) + request.count
            await self._scale(component, target)
        return ActorReply(actor_id=resolved.key, instances=len(component.instances))

    async def handle_actor_scale(self, request: ScaleActor) -> ActorReply:
        """Set the number of instances of an actor (starting it from ``actor_ref`` if needed)."""
        if request.count < 0:
            raise RequestError("count must be 0 or more")
        async with self._lock:
            component = self._find_actor(request.actor_id or request.actor_ref)
            if component is None:
                if not request.actor_ref:
                    raise ComponentNotFound(f"actor {request.actor_id} does not run on this host")
                resolved = await self._resolve(request.actor_ref, expect=ComponentKind.ACTOR)
                component = self.actors[resolved.key] = Component(resolved)
            await self._scale(component, request.count)
            if request.count == 0:
                self.actors.pop(component.resolved.key, None)
        return ActorReply(actor_id=component.resolved.key, instances=request.count)

    async def handle_actor_stop(self, request: StopActor) -> ActorReply:
        async with self._lock:
            component = self._find_actor(_required(request.actor_id, "actor_id"))
            if component is None:
                raise ComponentNotFound(f"actor {request.actor_id} does not run on this host")
            await self._stop_component(component)
            self.actors.pop(component.resolved.key, None)
        return ActorReply(actor_id=component.resolved.key)

    async def handle_provider_start(self, request: StartProvider) -> ProviderReply:
        ref = _required(request.provider_ref, "provider_ref")
        link_name = subjects.check_token(request.link_name or DEFAULT_LINK_NAME, "link name")
        resolved = await self._resolve(ref, expect=ComponentKind.PROVIDER)
        async with self._lock:
            existing = self.providers.get((resolved.key, link_name))
            if existing is not None:
                if existing.config == request.config:
                    return ProviderReply(provider_id=resolved.key, link_name=link_name, already_running=True)
                raise RequestError(
                    f"provider {resolved.name} ({link_name}) already runs here with another config; stop it first"
                )
            component = Component(resolved, link_name, request.config)
            self.providers[(resolved.key, link_name)] = component
            await self._scale(component, 1)
        return ProviderReply(provider_id=resolved.key, link_name=link_name)

    async def handle_provider_stop(self, request: StopProvider) -> ProviderReply:
        provider_id = _required(request.provider_id, "provider_id")
        link_name = request.link_name or DEFAULT_LINK_NAME
        async with self._lock:
            component = self.providers.pop((provider_id, link_name), None)
            if component is None:
                matches = [k for k, c in self.providers.items() if c.resolved.name == provider_id and k[1] == link_name]
                if not matches:
                    raise ComponentNotFound(f"provider {provider_id} ({link_name}) does not run on this host")
                component = self.providers.pop(matches[0])
            await self._stop_component(component)
        return ProviderReply(provider_id=component.resolved.key, link_name=link_name)

    async def handle_link_put(self, link: LinkDefinition) -> LinkPutReply:
        subjects.check_token(link.link_name, "link name")
        assert isinstance(self.links, LinkStore) and self.events is not None
        if await self.links.get(key_of(link)) == link:
            return LinkPutReply(changed=False)
        await self.links.put(link)
        await self.events.publish(EventName.LINKDEF_SET, link)
        return LinkPutReply(changed=True)

    async def handle_link_del(self, request: LinkId) -> Empty:
        assert isinstance(self.links, LinkStore) and self.events is not None
        link = await self.links.delete(
            _required(request.actor_id, "actor_id"), _required(request.contract_id, "contract_id"),
            request.link_name or DEFAULT_LINK_NAME,
        )
        await self.events.publish(EventName.LINKDEF_DELETED, link)
        return Empty()

    async def handle_link_get(self, request: Empty) -> LinkList:
        assert self.links is not None
        return LinkList(links=await self.links.all())

    # ---- what runs here ----------------------------------------------------------------

    def summary(self) -> HostInfo:
        return HostInfo(
            id=self.id,
            labels=self.labels,
            version=__version__,
            uptime_seconds=round(time.time() - self.started_at, 1),
            lattice=self.settings.lattice,
            actors=sum(len(c.instances) for c in self.actors.values()),
            providers=len(self.providers),
            dev=self.settings.dev,
        )

    def metrics_report(self) -> MetricsReport:
        """The host's figures (its instances' restarts and health), naming the instances that answer too."""
        inventory = self.inventory()
        return MetricsReport(host_id=self.id, families=metrics.families(self.metrics),
                             expect=metrics.expected_instances(inventory))

    def inventory(self) -> HostInventory:
        return HostInventory(
            host_id=self.id,
            labels=self.labels,
            version=__version__,
            uptime_seconds=round(time.time() - self.started_at, 1),
            actors=[c.describe() for c in self.actors.values()],
            providers=[c.describe_provider() for c in self.providers.values()],
            dev=self.settings.dev,
        )

    def _find_actor(self, id_or_ref: str) -> Component | None:
        for component in self.actors.values():
            r = component.resolved
            if id_or_ref in (r.key, r.ref, r.name):
                return component
        return None

    async def _resolve(self, ref: str, *, expect: ComponentKind) -> ResolvedComponent:
        try:
            resolved = await resolve(ref, self.settings, allow_unsigned=self.settings.dev)
        except MLCloudError as err:
            assert self.events is not None
            await self.events.publish(EventName.COMPONENT_REFUSED, ComponentRefused(
                host_id=self.id, image_ref=ref, kind=err.kind, reason=err.message,
                issuer=str(err.details.get("issuer", ""))))
            log.error("refused %s: %s", ref, err.message)
            raise
        if resolved.kind is not expect:
            raise ConfigError(f"{ref} is a {resolved.kind}, not a {expect}")
        return resolved

    async def _scale(self, component: Component, count: int) -> None:
        """Start or stop instances until ``count`` run; wait until new ones are ready."""
        new: list[Instance] = []
        while len(component.instances) < count:
            instance = self._new_instance(component)
            component.instances.append(instance)
            new.append(instance)
            instance.start()
        # Surplus instances leave the list once stopped: a scale-down cut short leaves them to the host's stop.
        await asyncio.gather(*(i.stop() for i in component.instances[count:]))
        del component.instances[count:]
        ready = await asyncio.gather(*(i.wait_ready(self.settings.ready_timeout) for i in new))
        if not all(ready):
            exits = sorted({i.last_exit for i in new if i.last_exit is not None})
            raise HostError(
                f"{component.resolved.name}: {ready.count(False)} of {len(new)} new instances not ready after "
                f"{self.settings.ready_timeout:.0f} s (exit codes {exits or 'none yet'}); they keep being "
                "restarted: see the host's log",
                name=component.resolved.name,
            )

    async def _stop_component(self, component: Component) -> None:
        await asyncio.gather(*(i.stop() for i in component.instances))
        component.instances.clear()

    def _new_instance(self, component: Component) -> Instance:
        r = component.resolved
        spec = InstanceSpec(
            instance_id=uuid.uuid4().hex,
            host_id=self.id,
            kind=r.kind,
            name=r.name,
            key=r.key,
            folder=str(r.folder),
            module=r.manifest.module,
            capabilities=list(r.capabilities),
            contract=r.manifest.contract,
            link_name=component.link_name,
            config=component.config,
        )
        assert self.account is not None
        user = KeyPair.generate(KeyKind.USER)
        creds = self.account.user(r.key, instance_permissions(self.settings.lattice, spec, user.public_key), key=user)
        spec = msgspec.structs.replace(spec, nats_creds=creds.text, account=self.account.public_key)
        return Instance(spec, self.settings, self._on_instance_change, self._on_instance_exit)

    def _all_instances(self) -> list[Instance]:
        return [i for c in (*self.actors.values(), *self.providers.values()) for i in c.instances]

    async def _on_instance_ready(self, msg: Msg) -> None:
        instance_id = msg.data.decode()
        for instance in self._all_instances():
            if instance.instance_id == instance_id:
                await instance.mark_ready()

    async def _on_instance_exit(self, instance: Instance) -> None:
        """Tell the callers whose calls the instance held that it died (RpcClient.follow_deaths)."""
        assert self.nc is not None
        died = Died(instance_id=instance.instance_id, targets=served_targets(self.settings.lattice, instance.spec))
        try:
            with nats_errors("the instance death notice", subjects.instance_died(self.settings.lattice)):
                await self.nc.publish(subjects.instance_died(self.settings.lattice), msgspec.json.encode(died))
        except MLCloudError as err:  # NATS away: the callers' calls fail by themselves (while_connected)
            log.warning("could not tell of %s's death: %s", instance.spec.name, err.message)

    async def _on_instance_change(self, instance: Instance, reason: str) -> None:
        spec = instance.spec
        provider = spec.kind is ComponentKind.PROVIDER
        data = InstanceChanged(
            host_id=self.id, public_key=spec.key, name=spec.name, instance_id=spec.instance_id,
            status=instance.status, reason=reason, restarts=instance.restarts,
            link_name=spec.link_name if provider else "", contract_id=spec.contract if provider else "",
        )
        started, stopped, restarted = (
            (EventName.PROVIDER_STARTED, EventName.PROVIDER_STOPPED, EventName.PROVIDER_RESTARTED) if provider
            else (EventName.ACTOR_STARTED, EventName.ACTOR_STOPPED, EventName.ACTOR_RESTARTED)
        )
        if reason == "restarted":
            name = restarted
        elif instance.status is InstanceStatus.HEALTHY:
            name = started if reason == "ready" and instance.restarts == 0 else EventName.HEALTH_CHECK_PASSED
        elif instance.status is InstanceStatus.UNHEALTHY:
            name = EventName.HEALTH_CHECK_FAILED
        elif instance.status is InstanceStatus.STOPPED:
            name = stopped
        else:
            return
        assert self.events is not None
        await self.events.publish(name, data)

    async def _heartbeat(self) -> None:
        while True:
            assert self.events is not None
            beat = HostHeartbeat(**msgspec.structs.asdict(self.summary()), inventory=self.inventory())
            await self.events.publish(EventName.HOST_HEARTBEAT, beat)
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _health_checks(self) -> None:
        """Ask each provider instance for its health; events go out only on a change."""
        assert self.nc is not None
        rpc = RpcClient(self.nc, caller=self.id, timeout=self.settings.ctl_timeout)
        while True:
            await asyncio.sleep(self.settings.health_interval)
            for component in list(self.providers.values()):
                for instance in list(component.instances):
                    if instance.status not in (InstanceStatus.HEALTHY, InstanceStatus.UNHEALTHY):
                        continue
                    if instance.process is None or instance.process.returncode is not None:
                        continue
                    target = subjects.provider_target(
                        self.settings.lattice, component.resolved.manifest.contract,
                        component.resolved.key, component.link_name,
                    )
                    try:
                        report = await rpc.call(target, HEALTH_OP, Empty(), HealthReport)
                        healthy, message = report.healthy, report.message
                    except MLCloudError as err:
                        healthy, message = False, err.message
                    except Exception as exc:  # a provider's bug must not end the checks
                        healthy, message = False, f"bad health answer: {exc!r}"
                    await instance.mark_health(healthy, message)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _required(value: str, field_name: str) -> str:
    if not value:
        raise RequestError(f"missing field {field_name!r}")
    return value


def _handler(request_type: type[Req], handle: Callable[[Req], Awaitable[msgspec.Struct]]) -> CtlHandler:
    """A control handler taking the raw request: decoded into ``request_type`` (empty means defaults)."""

    async def decode_and_handle(data: bytes) -> msgspec.Struct:
        try:
            request = msgspec.json.decode(data or b"{}", type=request_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedMessage(f"not a valid {request_type.__name__}: {exc}") from exc
        return await handle(request)

    return decode_and_handle


async def _unsubscribe(sub: Subscription) -> None:
    # A connection that closed under us took its subscriptions with it.
    with contextlib.suppress(LatticeUnavailable), nats_errors("leaving a subject", sub.subject):
        await sub.unsubscribe()
