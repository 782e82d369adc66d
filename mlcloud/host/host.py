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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mlcloud import __version__
from mlcloud.component import ComponentKind
from mlcloud.errors import ComponentNotFound, ConfigError, HostError, MLCloudError, RequestError
from mlcloud.host.artifacts import ResolvedComponent, resolve
from mlcloud.host.spec import HEALTH_OP, InstanceSpec
from mlcloud.host.supervisor import Instance, InstanceStatus
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.lattice import subjects
from mlcloud.lattice.connect import connect
from mlcloud.lattice.events import EventPublisher
from mlcloud.lattice.links import DEFAULT_LINK_NAME, LinkDefinition, LinkFeed, LinkStore, open_links
from mlcloud.lattice.rpc import RpcClient
from mlcloud.settings import Settings

log = logging.getLogger(__name__)

CtlHandler = Callable[[dict[str, Any]], Awaitable[Any]]


def default_labels() -> dict[str, str]:
    return {"arch": platform.machine(), "os": platform.system().lower(), "hostname": socket.gethostname()}


@dataclass
class Component:
    """A component this host runs, with its instances."""

    resolved: ResolvedComponent
    link_name: str = DEFAULT_LINK_NAME
    config: dict[str, Any] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        r = self.resolved
        info = {
            "id": r.key,
            "name": r.name,
            "image_ref": r.ref,
            "digest": r.digest,
            "version": r.manifest.version,
            "revision": r.manifest.revision,
            "capabilities": list(r.capabilities),
            "instances": [i.describe() for i in self.instances],
        }
        if r.kind is ComponentKind.PROVIDER:
            info.update(contract_id=r.manifest.contract, link_name=self.link_name, config=self.config)
        return info


class Host:
    def __init__(self, settings: Settings, labels: dict[str, str] | None = None, *, key: KeyPair | None = None) -> None:
        self.settings = settings
        self.key = key or KeyPair.generate(KeyKind.HOST)
        self.id = self.key.public_key
        self.labels = {**default_labels(), **(labels or {})}
        self.started_at = time.time()
        self.actors: dict[str, Component] = {}
        self.providers: dict[tuple[str, str], Component] = {}  # (key, link name)
        self.nc: NATS | None = None
        self.links: LinkStore | LinkFeed | None = None
        self.events: EventPublisher | None = None
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()  # serialises changes to what runs here
        self._stopped = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.nc = await connect(self.settings.effective_nats_url, name=f"host/{self.id[:8]}")
        self.links = await open_links(self.nc, self.settings.lattice)
        self.events = EventPublisher(self.nc, self.settings.lattice, self.id)
        lattice = self.settings.lattice
        handlers: dict[str, CtlHandler] = {
            subjects.ctl_ping_hosts(lattice): self.handle_host_ping,
            subjects.ctl_inventory(lattice, self.id): self.handle_inventory_get,
            subjects.ctl_command(lattice, self.id, "la"): self.handle_actor_start,
            subjects.ctl_command(lattice, self.id, "sa"): self.handle_actor_stop,
            subjects.ctl_command(lattice, self.id, "scale"): self.handle_actor_scale,
            subjects.ctl_command(lattice, self.id, "lp"): self.handle_provider_start,
            subjects.ctl_command(lattice, self.id, "sp"): self.handle_provider_stop,
            subjects.ctl_command(lattice, self.id, "stop"): self.handle_host_stop,
        }
        for subject, handler in handlers.items():
            self._subs.append(await self.nc.subscribe(subject, cb=self._ctl_callback(handler)))
        link_handlers = {"put": self.handle_link_put, "del": self.handle_link_del, "get": self.handle_link_get}
        # Without JetStream (a board's leaf node) the hub's hosts answer for the links.
        for verb, handler in link_handlers.items() if self.links.writable else ():
            subject = subjects.ctl_links(lattice, verb)
            self._subs.append(await self.nc.subscribe(subject, queue="mlcloud.links", cb=self._ctl_callback(handler)))
        self._subs.append(await self.nc.subscribe(subjects.instance_ready(lattice, self.id), cb=self._on_instance_ready))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        self._tasks.append(asyncio.create_task(self._health_checks(), name="health-checks"))
        await self.events.publish("host_started", host_id=self.id, labels=self.labels, version=__version__)
        log.info("host %s started on lattice %r (NATS %s)", self.id, lattice, self.settings.effective_nats_url)

    async def stop(self) -> None:
        """Stop actors first (they call providers), then providers, then leave the lattice."""
        if self.nc is None:
            return
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in self._tasks:
            task.cancel()
        async with self._lock:
            await asyncio.gather(*(self._stop_component(c) for c in list(self.actors.values())))
            self.actors.clear()
            await asyncio.gather(*(self._stop_component(c) for c in list(self.providers.values())))
            self.providers.clear()
        assert self.events is not None
        await self.events.publish("host_stopped", host_id=self.id)
        with contextlib.suppress(Exception):
            await self.nc.drain()
        self.nc = None
        self._stopped.set()
        log.info("host %s stopped", self.id)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ---- control interface -------------------------------------------------------------

    def _ctl_callback(self, handler: CtlHandler) -> Callable[[Msg], Awaitable[None]]:
        async def callback(msg: Msg) -> None:
            self._spawn(self._answer_ctl(handler, msg), f"ctl:{msg.subject}")

        return callback

    def _spawn(self, coro, name: str) -> None:
        """Run ``coro`` in the background, kept referenced until done, its failure logged."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _answer_ctl(self, handler: CtlHandler, msg: Msg) -> None:
        try:
            request = msgspec.json.decode(msg.data) if msg.data else {}
            if not isinstance(request, dict):
                raise RequestError("a control request is a JSON object")
            reply = {"accepted": True, "error": "", **(await handler(request) or {})}
        except msgspec.DecodeError as exc:
            reply = {"accepted": False, "kind": "MalformedMessage", "error": f"invalid JSON: {exc}"}
        except MLCloudError as err:
            reply = {"accepted": False, "kind": err.kind, "error": err.message}
        except Exception as exc:
            log.exception("control request on %s failed", msg.subject)
            reply = {"accepted": False, "kind": "MLCloudError", "error": f"{type(exc).__name__}: {exc}"}
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(msgspec.json.encode(reply))

    async def handle_host_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.summary()

    async def handle_inventory_get(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.inventory()

    async def handle_host_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        # Answer first, then stop.
        asyncio.get_running_loop().call_later(0.1, lambda: self._spawn(self.stop(), "host-stop"))
        return {}

    async def handle_actor_start(self, request: dict[str, Any]) -> dict[str, Any]:
        ref = _required(request, "actor_ref")
        count = int(request.get("count", 1))
        if count < 1:
            raise RequestError("count must be 1 or more")
        resolved = await self._resolve(ref, expect=ComponentKind.ACTOR)
        async with self._lock:
            component = self.actors.get(resolved.key)
            if component is None:
                component = self.actors[resolved.key] = Component(resolved)
            target = len(component.instances) + count
            await self._scale(component, target)
        return {"actor_id": resolved.key, "instances": len(component.instances)}

    async def handle_actor_scale(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set the number of instances of an actor (starting it from ``actor_ref`` if needed)."""
        count = int(_required(request, "count"))
        if count < 0:
            raise RequestError("count must be 0 or more")
        async with self._lock:
            component = self._find_actor(request.get("actor_id") or request.get("actor_ref", ""))
            if component is None:
                if "actor_ref" not in request:
                    raise ComponentNotFound(f"actor {request.get('actor_id')} does not run on this host")
                resolved = await self._resolve(request["actor_ref"], expect=ComponentKind.ACTOR)
                component = self.actors[resolved.key] = Component(resolved)
            await self._scale(component, count)
            if count == 0:
                self.actors.pop(component.resolved.key, None)
        return {"actor_id": component.resolved.key, "instances": count}

    async def handle_actor_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            component = self._find_actor(_required(request, "actor_id"))
            if component is None:
                raise ComponentNotFound(f"actor {request['actor_id']} does not run on this host")
            await self._stop_component(component)
            self.actors.pop(component.resolved.key, None)
        return {"actor_id": component.resolved.key}

    async def handle_provider_start(self, request: dict[str, Any]) -> dict[str, Any]:
        ref = _required(request, "provider_ref")
        link_name = subjects.check_token(request.get("link_name") or DEFAULT_LINK_NAME, "link name")
        config = request.get("config") or {}
        if not isinstance(config, dict):
            raise RequestError("provider config must be a JSON object")
        resolved = await self._resolve(ref, expect=ComponentKind.PROVIDER)
        async with self._lock:
            existing = self.providers.get((resolved.key, link_name))
            if existing is not None:
                if existing.config == config:
                    return {"provider_id": resolved.key, "link_name": link_name, "already_running": True}
                raise RequestError(
                    f"provider {resolved.name} ({link_name}) already runs here with another config; stop it first"
                )
            component = self.providers[(resolved.key, link_name)] = Component(resolved, link_name, config)
            await self._scale(component, 1)
        return {"provider_id": resolved.key, "link_name": link_name}

    async def handle_provider_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        provider_id = _required(request, "provider_id")
        link_name = request.get("link_name") or DEFAULT_LINK_NAME
        async with self._lock:
            component = self.providers.pop((provider_id, link_name), None)
            if component is None:
                matches = [k for k, c in self.providers.items() if c.resolved.name == provider_id and k[1] == link_name]
                if not matches:
                    raise ComponentNotFound(f"provider {provider_id} ({link_name}) does not run on this host")
                component = self.providers.pop(matches[0])
            await self._stop_component(component)
        return {"provider_id": component.resolved.key, "link_name": link_name}

    async def handle_link_put(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            link = msgspec.convert(request, LinkDefinition)
        except msgspec.ValidationError as exc:
            raise RequestError(f"invalid link definition: {exc}") from exc
        subjects.check_token(link.link_name, "link name")
        assert isinstance(self.links, LinkStore) and self.events is not None
        if await self.links.get(link.key) == link:
            return {"changed": False}
        await self.links.put(link)
        await self.events.publish("linkdef_set", **msgspec.to_builtins(link))
        return {"changed": True}

    async def handle_link_del(self, request: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.links, LinkStore) and self.events is not None
        link = await self.links.delete(
            _required(request, "actor_id"), _required(request, "contract_id"),
            request.get("link_name") or DEFAULT_LINK_NAME,
        )
        await self.events.publish("linkdef_deleted", **msgspec.to_builtins(link))
        return {}

    async def handle_link_get(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.links is not None
        return {"links": [msgspec.to_builtins(link) for link in await self.links.all()]}

    # ---- what runs here ----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "labels": self.labels,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "lattice": self.settings.lattice,
            "actors": sum(len(c.instances) for c in self.actors.values()),
            "providers": len(self.providers),
        }

    def inventory(self) -> dict[str, Any]:
        return {
            "host_id": self.id,
            "labels": self.labels,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "actors": [c.describe() for c in self.actors.values()],
            "providers": [c.describe() for c in self.providers.values()],
        }

    def _find_actor(self, id_or_ref: str) -> Component | None:
        for component in self.actors.values():
            r = component.resolved
            if id_or_ref in (r.key, r.ref, r.name):
                return component
        return None

    async def _resolve(self, ref: str, *, expect: ComponentKind) -> ResolvedComponent:
        try:
            resolved = await resolve(ref, self.settings)
        except MLCloudError as err:
            assert self.events is not None
            await self.events.publish("component_refused", host_id=self.id, image_ref=ref, kind=err.kind, reason=err.message)
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
        surplus = component.instances[count:]
        del component.instances[count:]
        await asyncio.gather(*(i.stop() for i in surplus))
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
        return Instance(spec, self.settings, self._on_instance_change)

    def _all_instances(self) -> list[Instance]:
        return [i for c in (*self.actors.values(), *self.providers.values()) for i in c.instances]

    async def _on_instance_ready(self, msg: Msg) -> None:
        instance_id = msg.data.decode()
        for instance in self._all_instances():
            if instance.instance_id == instance_id:
                await instance.mark_ready()

    async def _on_instance_change(self, instance: Instance, reason: str) -> None:
        spec = instance.spec
        data = {
            "host_id": self.id, "public_key": spec.key, "name": spec.name, "instance_id": spec.instance_id,
            "status": str(instance.status), "reason": reason, "restarts": instance.restarts,
        }
        if spec.kind is ComponentKind.PROVIDER:
            data.update(link_name=spec.link_name, contract_id=spec.contract)
        kind = str(spec.kind)
        if reason == "restarted":
            name = f"{kind}_restarted"
        elif instance.status is InstanceStatus.HEALTHY:
            name = f"{kind}_started" if reason == "ready" and instance.restarts == 0 else "health_check_passed"
        elif instance.status is InstanceStatus.UNHEALTHY:
            name = "health_check_failed"
        elif instance.status is InstanceStatus.STOPPED:
            name = f"{kind}_stopped"
        else:
            return
        assert self.events is not None
        await self.events.publish(name, **data)

    async def _heartbeat(self) -> None:
        while True:
            assert self.events is not None
            await self.events.publish("host_heartbeat", **self.summary(), inventory=self.inventory())
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _health_checks(self) -> None:
        """Ask each provider instance for its health; events go out only on a change."""
        assert self.nc is not None
        rpc = RpcClient(self.nc, origin=self.id, timeout=self.settings.ctl_timeout)
        while True:
            await asyncio.sleep(self.settings.health_interval)
            for component in list(self.providers.values()):
                for instance in list(component.instances):
                    if instance.status not in (InstanceStatus.HEALTHY, InstanceStatus.UNHEALTHY):
                        continue
                    if instance.process is None or instance.process.returncode is not None:
                        continue
                    subject = subjects.provider_health(self.settings.lattice, component.resolved.key, component.link_name)
                    try:
                        answer = await rpc.call(subject, HEALTH_OP, {})
                        healthy, message = bool(answer.get("healthy")), str(answer.get("message", ""))
                    except MLCloudError as err:
                        healthy, message = False, err.message
                    except Exception as exc:  # a provider's odd answer must not end the checks
                        healthy, message = False, f"bad health answer: {exc!r}"
                    await instance.mark_health(healthy, message)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _required(request: dict[str, Any], field_name: str) -> Any:
    value = request.get(field_name)
    if value in (None, ""):
        raise RequestError(f"missing field {field_name!r}")
    return value
