"""The ``wasmcloud:mlinference`` provider: models from Bindle, served on the lattice.

Each link (from an actor, usually the api actor) names its models in its values, route → bindle
id, plus optional engine and batching keys (see :mod:`mlcloud.inference.config`). For each link
a :class:`~mlcloud.inference.ModelRegistry` loads the models in the background: the invoice's
first parcel of group ``model`` and of group ``metadata`` are downloaded once into a
sha256-verified disk cache shared by every link. ``MlInference.Predict`` runs a route's model;
``MlInference.Status`` reports each route's bindle, engine, state, tensors and the last minute's
request figures (for ``/models`` and the washboard). Changing a link's values swaps models
live; model events (``model_loaded``, ``model_load_failed``, …) go out on the lattice.

The model repository operations (``MlInference.RepositoryIndex``, ``Load``, ``Unload``: the Open
Inference Protocol's ``/v2/repository``, ``mlcloud models load``, the washboard) list every bindle
the Bindle server holds with its state, and load or unload a route on top of the link's values
(:mod:`repository`) through the same load-then-swap path as a relink.

A model loads only if its invoice is signed as creator by a trusted account key
(:func:`~mlcloud.inference.creator_keyring`) and no signature on it is broken; otherwise it is
FAILED with the reason and no parcel is fetched.

Predict calls, queue and compute times, batch sizes, model states and load times are Prometheus
metrics of this process (docs/metrics.md); the last minute's figures are read from them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from metrics import SUCCESS, RouteFigures
from repository import RouteTable

from mlcloud.bindle import AsyncClient
from mlcloud.bindle.models import Invoice
from mlcloud.errors import ContextNotFound, InvalidModel, MLCloudError, ModelLoading
from mlcloud.inference import (
    InferenceConfig,
    ModelRegistry,
    ParcelCache,
    bindle_fetcher,
    creator_keyring,
    parse_link_values,
)
from mlcloud.inference.registry import Fetch
from mlcloud.interfaces import (
    LOAD_MODEL,
    MODEL_STATUS,
    PREDICT,
    REPOSITORY_INDEX,
    UNLOAD_MODEL,
    InferenceInput,
    InferenceOutput,
    ModelInfo,
    ModelState,
    ModelStatusRequest,
    RepositoryModel,
    RepositoryRequest,
)
from mlcloud.lattice.control import LinkDefinition
from mlcloud.metrics import INFERENCE_DURATION, INFERENCE_REQUESTS, REGISTRY, ModelFigures, version_of
from mlcloud.sdk import Context, HealthReport, Provider, operation

log = logging.getLogger("mlcloud.mlinference")

LOAD_WAIT_SHARE = 0.75  # of the RPC timeout, that a load waits before it answers "still loading"


class MlInference(Provider):
    def __init__(self) -> None:
        super().__init__()
        self.registries: dict[str, ModelRegistry] = {}  # by linked actor id
        self.figures = RouteFigures()
        self.tables: dict[str, RouteTable] = {}  # by linked actor id
        self.ctx: Context | None = None
        self.bindle: AsyncClient | None = None
        self.fetch: Fetch | None = None
        self.inference_config = InferenceConfig()
        self._events: set[asyncio.Future] = set()

    async def on_start(self, ctx: Context) -> None:
        self.ctx = ctx
        REGISTRY.register(ModelFigures(lambda: [i for r in self.registries.values() for i in r.status()]))
        bindle_url = self.config.get("bindle_url") or ctx.settings.effective_bindle_url
        self.bindle = AsyncClient(bindle_url)
        cache = ParcelCache(Path(self.config.get("cache_dir") or ctx.settings.state_dir / "parcels"))
        settings = ctx.settings
        self.fetch = bindle_fetcher(self.bindle, cache, lambda: creator_keyring(settings))
        self.inference_config = InferenceConfig.from_settings(ctx.settings)
        if self.config.get("engine"):
            self.inference_config = self.inference_config.replace(engine=self.config["engine"])
        log.info("models come from %s; parcels cached in %s", bindle_url, cache.root)

    async def on_link_put(self, link: LinkDefinition) -> None:
        models = parse_link_values(link.values, self.inference_config.batching)
        registry = self.registries.get(link.actor_id)
        if registry is None:
            config = self.inference_config
            if models.batching:
                config = config.replace(batching=models.batching)
            assert self.fetch is not None
            registry = ModelRegistry(self.fetch, config, on_event=self._event_hook(link.actor_id))
            self.registries[link.actor_id] = registry
            self.tables[link.actor_id] = RouteTable(models)
        elif models.batching is not None:
            await registry.set_batching(models.batching)
        table = self.tables[link.actor_id]
        table.relink(models)
        await registry.apply(table.routes, table.engines)
        log.info("link from %s: routes %s", link.actor_id[:8], models.routes)

    async def until_ready(self) -> None:
        # Calls come only once the linked models have loaded (or failed): a restarted instance's
        # callers wait for it rather than get 503 ModelLoading (models relinked later do answer that).
        await asyncio.gather(*(registry.wait_ready() for registry in self.registries.values()))

    async def on_link_del(self, link: LinkDefinition) -> None:
        registry = self.registries.pop(link.actor_id, None)
        self.tables.pop(link.actor_id, None)
        if registry is not None:
            await registry.aclose()

    async def on_stop(self) -> None:
        await asyncio.gather(*(r.aclose() for r in self.registries.values()), return_exceptions=True)
        if self.bindle is not None:
            await self.bindle.aclose()

    async def health(self) -> HealthReport:
        failed = [f"{i.name}: {i.reason}" for r in self.registries.values() for i in r.status()
                  if i.state is ModelState.FAILED]
        # A failed model is reported, but the provider itself still serves the others.
        return HealthReport(healthy=True, message="; ".join(failed))

    def _registry(self, actor_id: str) -> ModelRegistry:
        registry = self.registries.get(actor_id)
        if registry is None:
            raise ContextNotFound(f"actor {actor_id[:8]} has no link to this provider, so no models")
        return registry

    @operation(PREDICT)
    async def predict(self, ctx: Context, request: InferenceInput) -> InferenceOutput:
        started = time.perf_counter()
        registry = self._registry(ctx.caller)
        bindle = registry.bindle_of(request.model)
        # Only a linked route is a label: a caller's made-up names do not grow the label set.
        labels = (request.model, version_of(bindle)) if bindle else ("", "")
        try:
            tensor = await registry.predict(request.model, request.tensor, request.index)
        except MLCloudError as err:
            INFERENCE_REQUESTS.labels(*labels, err.kind).inc()
            raise
        INFERENCE_REQUESTS.labels(*labels, SUCCESS).inc()
        INFERENCE_DURATION.labels(*labels).observe(time.perf_counter() - started)
        return InferenceOutput(result=SUCCESS, tensor=tensor)

    @operation(MODEL_STATUS)
    async def status(self, ctx: Context, request: ModelStatusRequest) -> list[ModelInfo]:
        actor = request.actor if ctx.from_host and request.actor else ctx.caller
        return self.figures.annotate(self._registry(actor).status(request.model or None))

    @operation(REPOSITORY_INDEX)
    async def repository_index(self, ctx: Context, request: RepositoryRequest) -> list[RepositoryModel]:
        """Every route with its state, unloaded routes, then every bindle no route serves."""
        actor = request.actor if ctx.from_host and request.actor else ctx.caller
        registry, table = self._registry(actor), self.tables[actor]
        index = [RepositoryModel(name=i.name, bindle_id=i.bindle_id, state=i.state, reason=i.reason)
                 for i in registry.status()]
        index += [RepositoryModel(name=r, bindle_id=b, reason="unloaded") for r, b in sorted(table.unloaded.items())]
        served = {m.bindle_id for m in index}
        index += [RepositoryModel(name=inv.name, bindle_id=inv.id) for inv in await self._invoices()
                  if inv.id not in served]
        return index

    @operation(LOAD_MODEL)
    async def load_model(self, ctx: Context, request: RepositoryRequest) -> RepositoryModel:
        """Serve ``model`` (with ``bindle_id``, else its link's bindle, else the newest bindle of that
        name) and answer once it is READY; the old bindle of a route serves until then."""
        actor = request.actor if ctx.from_host and request.actor else ctx.caller
        registry, table = self._registry(actor), self.tables[actor]
        route = request.model
        bindle_id = (request.bindle_id or registry.routes.get(route) or table.declared.routes.get(route)
                     or await self._newest(route))
        table.load(route, bindle_id)
        await registry.apply(table.routes, table.engines)
        try:
            await registry.wait_ready([route], timeout=ctx.settings.rpc_timeout * LOAD_WAIT_SHARE)
        except TimeoutError:
            raise ModelLoading(f"model {route!r} ({bindle_id}) is still loading") from None
        info = registry.status(route)[0]
        if info.bindle_id != bindle_id or info.state is not ModelState.READY:
            raise InvalidModel(f"loading {route!r} ({bindle_id}) failed: {info.reason}")
        return RepositoryModel(name=route, bindle_id=bindle_id, state=info.state)

    @operation(UNLOAD_MODEL)
    async def unload_model(self, ctx: Context, request: RepositoryRequest) -> RepositoryModel:
        actor = request.actor if ctx.from_host and request.actor else ctx.caller
        registry, table = self._registry(actor), self.tables[actor]
        bindle_id = registry.routes.get(request.model)
        if bindle_id is None:
            raise ContextNotFound(f"no model is served as {request.model!r}")
        table.unload(request.model)
        await registry.apply(table.routes, table.engines)
        return RepositoryModel(name=request.model, bindle_id=bindle_id, reason="unloaded")

    async def _invoices(self) -> list[Invoice]:
        """Every invoice on the Bindle server (yanked ones left out)."""
        assert self.bindle is not None
        invoices: list[Invoice] = []
        while True:
            page = await self.bindle.query(offset=len(invoices))
            invoices += page.invoices
            if not page.more or not page.invoices:
                return invoices

    async def _newest(self, name: str) -> str:
        assert self.bindle is not None
        found = (await self.bindle.query(name, strict=True)).invoices
        if not found:
            raise ContextNotFound(f"no model is linked as {name!r} and no bindle is named so")
        return found[-1].id  # the server sorts by name, then version

    def _event_hook(self, actor_id: str):
        def on_event(name: str, info: ModelInfo) -> None:
            if self.ctx is not None:
                task = asyncio.ensure_future(self.ctx.publish_event(
                    name, actor_id=actor_id, model=info.name, bindle_id=info.bindle_id, engine=info.engine,
                    state=info.state, reason=info.reason,
                ))
                self._events.add(task)  # kept until published
                task.add_done_callback(self._events.discard)
        return on_event


component = MlInference
