"""The process of one actor or provider instance, started and supervised by a host.

``python -m mlcloud.host.runner`` reads its :class:`InstanceSpec` from the environment, imports
the component's module from its (verified) folder, connects to NATS with the credentials its
host minted for it, and serves. This is host code, not component code: it resolves links,
checks that a provider's caller has a link, signs the grants of the chains the component starts,
answers its host's health checks and tells the host when it is ready. Its refusal of a call to
an unclaimed contract is a clear early error; nats-server's permissions enforce the same claims.
"""

from __future__ import annotations

from mlcloud.host import lean  # noqa: F401  # first of all: before nats-py is imported

# isort: split
import asyncio
import ctypes
import gc
import importlib.util
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import setproctitle
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from mlcloud import tracing
from mlcloud.errors import CapabilityNotClaimed, ConfigError, LinkNotFound, MLCloudError, UnknownOperation
from mlcloud.host.spec import HEALTH_OP, SPEC_ENV, InstanceSpec
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import Credentials
from mlcloud.lattice.chunks import Chunks
from mlcloud.lattice.connect import connect, leave
from mlcloud.lattice.control import HealthReport, LinkDefinition, MetricsReport
from mlcloud.lattice.events import EventPublisher
from mlcloud.lattice.grants import Signer, Verifier
from mlcloud.lattice.links import LinkFeed, LinkStore, open_links
from mlcloud.lattice.rpc import RpcClient, RpcServer
from mlcloud.lattice.scrape import Answering, answer_scrapes, gather
from mlcloud.lattice.wire import Forward, Invocation
from mlcloud.metrics import REGISTRY, families, render
from mlcloud.sdk import Actor, Context, Provider
from mlcloud.settings import Settings


def settle_heap() -> None:
    """Move everything start-up made (modules, the model's Python objects) out of the collector's
    reach: a full collection then walks only what requests made since, not the ~50,000 objects
    of nats-py, numpy and the component. Before this, full collections came now and then (one in
    400 requests at concurrency 1, over the five processes measured) and took 15–390 ms each
    (docs/performance.md): a request in the tail each time.
    Freezing is instant; a full collection first would cost the restart of an instance tens to
    hundreds of milliseconds, for the few cycles start-up leaves (they stay)."""
    gc.freeze()


def load_component(folder: Path, module: str) -> Actor | Provider:
    """Import ``module`` from ``folder`` and return its ``component`` (an Actor or Provider)."""
    sys.path.insert(0, str(folder))
    path = folder / f"{module}.py"
    if not path.exists():
        path = folder / module / "__init__.py"
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None or not path.exists():
        raise ConfigError(f"component module {module!r} not found in {folder}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)
    component = getattr(mod, "component", None)
    if isinstance(component, type) and issubclass(component, Provider):
        component = component()
    if not isinstance(component, (Actor, Provider)):
        raise ConfigError(f"{path} must define `component`, an mlcloud.sdk Actor or Provider")
    return component


class ComponentRuntime:
    """Serves one component instance on the lattice until asked to stop (the SDK's ``Runtime``)."""

    def __init__(self, spec: InstanceSpec, settings: Settings, component: Actor | Provider) -> None:
        self.spec = spec
        self.settings = settings
        self.component = component
        self.log = logging.getLogger(f"mlcloud.{spec.name}")
        self.nc: NATS | None = None
        self.rpc: RpcClient | None = None
        self.chunks: Chunks | None = None  # the lattice's object store, for messages past max_payload
        self.events: EventPublisher | None = None
        self._servers: list[RpcServer] = []
        self._scrapes: Answering | None = None
        self._links: dict[tuple[str, str, str], LinkDefinition] = {}  # (actor, contract, link name)
        self._links_ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_provider(self) -> bool:
        return isinstance(self.component, Provider)

    def link_for(self, actor_id: str) -> LinkDefinition | None:
        """The link from ``actor_id`` to this provider instance."""
        return self._links.get((actor_id, self.spec.contract, self.spec.link_name))

    def own_link(self, contract: str, link_name: str) -> LinkDefinition | None:
        """This actor's link for ``contract``."""
        return self._links.get((self.spec.key, contract, link_name))

    def jetstream(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream()

    def provider_target(self, contract: str, link_name: str) -> str:
        """Where this actor's calls for ``contract`` go, once its claims and links allow them."""
        if contract not in self.spec.capabilities:
            raise CapabilityNotClaimed(
                f"actor {self.spec.name} does not claim {contract}; its claims allow "
                f"{', '.join(self.spec.capabilities) or 'no capabilities'}"
            )
        link = self.own_link(contract, link_name)
        if link is None:
            raise LinkNotFound(f"actor {self.spec.name} has no link for {contract} (link name {link_name!r})")
        return subjects.provider_target(self.settings.lattice, contract, link.provider_id, link_name)

    async def publish_event(self, name: str, /, **data: Any) -> None:
        assert self.events is not None
        await self.events.publish(name, **data)

    async def gather_metrics(self) -> bytes:
        assert self.nc is not None
        return render(await gather(self.nc, self.settings.lattice, timeout=self.settings.ctl_timeout))

    def metrics_report(self) -> MetricsReport:
        """This process's figures, as it answers a scrape."""
        return MetricsReport(host_id=self.spec.host_id, component=self.spec.name, instance_id=self.spec.instance_id,
                             families=families(REGISTRY))

    async def call_provider(
        self, contract: str, op: str, message: Any, result_type: Any, *,
        link_name: str, timeout: float | None, invocation_id: str | None, idempotent: bool = False,
    ) -> Any:
        target = self.provider_target(contract, link_name)
        assert self.rpc is not None
        return await self.rpc.call(target, op, message, result_type, timeout=timeout, invocation_id=invocation_id,
                                   idempotent=idempotent)

    def provider_forward(
        self, contract: str, op: str, msg: dict[str, Any], *, field: str, pick: str, link_name: str
    ) -> Forward:
        """A :class:`Forward` to this actor's linked provider, made as this actor's own call."""
        target = self.provider_target(contract, link_name)
        return Forward(target=target, op=op, field=field, msg=msg, pick=pick)

    def actor_forward(self, actor: str, op: str, msg: dict[str, Any], *, field: str, pick: str) -> Forward:
        """A :class:`Forward` to another actor, made as this actor's own call."""
        target = subjects.actor_target(self.settings.lattice, actor)
        return Forward(target=target, op=op, field=field, msg=msg, pick=pick)

    async def call_actor(
        self, actor: str, op: str, message: Any, result_type: Any, *,
        timeout: float | None, invocation_id: str | None, forward: Forward | None = None,
        idempotent: bool = False,
    ) -> Any:
        assert self.rpc is not None
        target = subjects.actor_target(self.settings.lattice, actor)
        return await self.rpc.call(target, op, message, result_type, timeout=timeout,
                                   invocation_id=invocation_id, forward=forward, idempotent=idempotent)

    async def run(self) -> None:
        credentials = Credentials.parse(self.spec.nats_creds)
        self.nc = await connect(self.settings.effective_nats_url, name=f"{self.spec.name}/{self.spec.instance_id[:8]}",
                                credentials=credentials)
        self.chunks = Chunks(self.nc, self.settings.lattice)
        self.rpc = RpcClient(self.nc, caller=self.spec.key, timeout=self.settings.rpc_timeout,
                             signer=Signer(credentials), retries=self.settings.rpc_retries, chunks=self.chunks)
        await self.rpc.follow_deaths(self.settings.lattice)
        self.events = EventPublisher(self.nc, self.settings.lattice, self.spec.key)
        # Calls made outside any invocation (a provider serving HTTP) each get a fresh id.
        lifetime_ctx = Context(self, invocation_id="", caller=self.spec.key)
        try:
            if isinstance(self.component, Provider):
                self.component.config = dict(self.spec.config)
                await self.component.on_start(lifetime_ctx)
            links = await open_links(self.nc, self.settings.lattice, host_id=self.spec.host_id)
            self._tasks.append(asyncio.create_task(self._follow_links(links), name="links"))
            if not await self._ready_or_stopping(self._links_ready):
                return  # asked to stop before the links could be read
            if isinstance(self.component, Actor):
                await self.component.on_start(lifetime_ctx)
            elif not await self._provider_ready(self.component):
                return
            await self._serve()
            await self.nc.publish(
                subjects.instance_ready(self.settings.lattice, self.spec.host_id), self.spec.instance_id.encode()
            )
            self.log.info("%s %s ready (instance %s)", self.spec.kind, self.spec.name, self.spec.instance_id[:8])
            settle_heap()
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def _ready_or_stopping(self, ready: asyncio.Event) -> bool:
        """Wait for ``ready`` unless a stop comes first; True when ready."""
        waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        return ready.is_set()

    async def _provider_ready(self, provider: Provider) -> bool:
        """Wait for ``provider.until_ready()``, at most ``ready_timeout`` (then serve anyway), unless
        a stop comes first; True unless stopping."""
        ready = asyncio.Event()

        async def wait() -> None:
            try:
                await asyncio.wait_for(provider.until_ready(), self.settings.ready_timeout)
            except TimeoutError:
                self.log.warning("not ready after %.0f s; taking calls anyway", self.settings.ready_timeout)
            ready.set()

        waiting = asyncio.create_task(wait(), name="until-ready")
        try:
            return await self._ready_or_stopping(ready)
        finally:
            waiting.cancel()

    async def _serve(self) -> None:
        assert self.nc is not None
        lattice, spec = self.settings.lattice, self.spec
        if self.is_provider:
            served = {f"{spec.key}.{spec.link_name}": subjects.provider_target(lattice, spec.contract, spec.key,
                                                                               spec.link_name)}
        else:
            served = {name: subjects.actor_target(lattice, name) for name in (spec.key, spec.name)}
        verifier = Verifier(spec.account)
        for queue, target in served.items():
            self._servers.append(RpcServer(self.nc, target, self._dispatch, identity=spec.key, queue=queue,
                                           verifier=verifier, ack_timeout=self.settings.forward_ack_timeout,
                                           chunks=self.chunks))
        for server in self._servers:
            await server.start()
        self._scrapes = await answer_scrapes(self.nc, lattice, self.metrics_report)

    async def _dispatch(self, invocation: Invocation) -> Any:
        from_host = invocation.caller == self.spec.host_id
        if self.is_provider:
            if invocation.op == HEALTH_OP and from_host:
                return await self._health()
            if not from_host and self.link_for(invocation.caller) is None:
                raise LinkNotFound(f"{invocation.caller} has no link to {self.spec.name} "
                                   f"(link name {self.spec.link_name!r})")
        operation = self.component.operations.get(invocation.op)
        if operation is None:
            raise UnknownOperation(f"{self.spec.name} has no operation {invocation.op!r}")
        payload = invocation.take_payload(operation.op.request)
        ctx = Context(self, invocation_id=invocation.id, caller=invocation.caller, from_host=from_host)
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = await operation.invoke(ctx, payload)
            outcome = "ok"
            return result
        except MLCloudError as err:
            outcome = err.kind
            raise
        finally:
            # The stage's line of the request (its id comes from mlcloud.tracing's log filter): a
            # failure at INFO, a success at DEBUG, since each line costs a write in every process
            # a request passes (the httpserver's access line already says it was answered).
            level = logging.INFO if outcome != "ok" and not from_host else logging.DEBUG
            self.log.log(level, "%s %s %.1f ms (caller %s)", invocation.op, outcome,
                         (time.perf_counter() - started) * 1000, invocation.caller[:8])

    async def _health(self) -> HealthReport:
        if isinstance(self.component, Provider):
            return await self.component.health()
        return HealthReport(healthy=True)

    async def _follow_links(self, store: LinkStore | LinkFeed) -> None:
        """Keep ``_links`` current and tell a provider of every link that names it."""
        while not self._stopping.is_set():
            replayed: set[tuple[str, str, str]] = set()
            try:
                async for event in store.watch(follow=True):
                    if event is None:
                        # A re-watch replays the links that exist: any other we knew is gone.
                        for key in [k for k in self._links if k not in replayed]:
                            await self._apply_link(self._links[key], deleted=True)
                        self._links_ready.set()
                    else:
                        replayed.add((event.link.actor_id, event.link.contract_id, event.link.link_name))
                        await self._apply_link(event.link, event.deleted)
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS reconnecting: re-watch; the watch replays current links
                self.log.warning("link watch interrupted; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def _apply_link(self, link: LinkDefinition, deleted: bool) -> None:
        mine = link.provider_id == self.spec.key and link.link_name == self.spec.link_name
        if not (mine if self.is_provider else link.actor_id == self.spec.key):
            return
        key = (link.actor_id, link.contract_id, link.link_name)
        if deleted:
            self._links.pop(key, None)
        elif self._links.get(key) == link:
            return  # a replay after reconnecting: nothing changed
        else:
            self._links[key] = link
        if isinstance(self.component, Provider):
            hook = self.component.on_link_del if deleted else self.component.on_link_put
            try:
                await hook(link)
            except Exception:
                self.log.exception("link %s of %s failed to apply", "del" if deleted else "put", link.actor_id)

    async def _shutdown(self) -> None:
        for server in self._servers:
            await server.stop()
        if self._scrapes is not None:
            await self._scrapes.stop()
        for task in self._tasks:
            task.cancel()
        if isinstance(self.component, Provider):
            try:
                await self.component.on_stop()
            except Exception:
                self.log.exception("on_stop failed")
        if self.nc is not None:
            await leave(self.nc, self.spec.name)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its host dies, so no instance is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# glibc mallopt parameters (malloc.h) and the values the lattice's processes run with.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def tune_malloc() -> None:
    """Serve buffers below 4 MiB from the heap and keep up to 32 MiB of freed heap mapped.

    Every request moves a 600 KB tensor through several buffers per process (msgpack, the NATS
    protocol, the socket). By default glibc maps each such buffer fresh (``mmap``) and unmaps
    it when freed, so every one costs ~150 page faults: on the 2-core machines measured, building
    one 600 KB NATS message took ~0.7 ms that way against ~0.04 ms from the heap
    (docs/performance.md). A no-op where libc is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass


def main() -> None:
    _die_with_parent()
    tune_malloc()
    settings = Settings.from_env()
    spec = msgspec.json.decode(os.environ[SPEC_ENV], type=InstanceSpec)
    # ps shows which component this is, not `python -m mlcloud.host.runner` for every instance.
    setproctitle.setproctitle(spec.title)
    configure_logging(spec, settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Bindle request is noise
    tracing.setup(spec.name, spec.instance_id)
    component = load_component(Path(spec.folder), spec.module)
    runtime = ComponentRuntime(spec, settings, component)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # A thread per core for blocking handlers (preprocess's decoding): Pillow and numpy release
        # the GIL, so that uses every core; Python's default (cores + 4) only adds decodes that
        # wait for a core, each holding its buffers (6 instead of 2 on 2 cores: +10 MB, no
        # throughput; docs/performance.md, "Memory").
        loop.set_default_executor(ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="handler"))
        loop.add_signal_handler(signal.SIGTERM, runtime.stop)
        # Ctrl-C in a terminal reaches the whole process group; the host decides when we stop.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        await runtime.run()

    try:
        run_event_loop(run())
    finally:
        tracing.shutdown()


def instance_log_file(log_dir: Path, spec: InstanceSpec) -> Path:
    """Where an instance appends its log besides stderr when ``log_dir`` is set: one file per
    instance, kept across its restarts."""
    return log_dir / f"{spec.name}-{spec.instance_id[:8]}.log"


def configure_logging(spec: InstanceSpec, settings: Settings) -> None:
    """Log to stderr (the host's), and to :func:`instance_log_file` when ``settings.log_dir`` is
    set; every line names the component and the request being served (``-`` outside one)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.log_dir is not None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        # Watched: a file logrotate moved away is reopened.
        handlers.append(logging.handlers.WatchedFileHandler(instance_log_file(settings.log_dir, spec)))
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [{spec.name} %(request_id)s] %(message)s",
        handlers=[tracing.add_request_ids(handler) for handler in handlers],
    )


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop.

    Every hop of a request is a NATS message through each component's loop; uvloop's is
    written in C over libuv and costs less CPU per message (docs/performance.md).
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


if __name__ == "__main__":
    main()
