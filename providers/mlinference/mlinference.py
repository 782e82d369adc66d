"""The ``wasmcloud:mlinference`` provider: models from Bindle, served on the lattice.

Each link (from an actor, usually the api actor) names its models in its values, route → bindle
id, plus optional engine and batching keys (see :mod:`mlcloud.inference.config`). For each link
a :class:`~mlcloud.inference.ModelRegistry` loads the models in the background: the invoice's
first parcel of group ``model`` and of group ``metadata`` are downloaded once into a
sha256-verified disk cache shared by every link. ``MlInference.Predict`` runs a route's model;
``MlInference.Status`` reports each route's bindle, engine, state, tensors and the last minute's
request figures (for ``/v2/models`` and the washboard). Changing a link's values swaps models
live; model events (``model_loaded``, ``model_load_failed``, …) go out on the lattice.

A model loads only if its invoice is signed as creator by a trusted account key
(:func:`~mlcloud.inference.creator_keyring`) and no signature on it is broken; otherwise it is
FAILED with the reason and no parcel is fetched.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from metrics import RouteMetrics

from mlcloud.bindle import AsyncClient
from mlcloud.errors import ContextNotFound, MLCloudError
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
    MODEL_STATUS,
    PREDICT,
    InferenceInput,
    InferenceOutput,
    ModelInfo,
    ModelState,
    ModelStatusRequest,
)
from mlcloud.lattice.control import LinkDefinition
from mlcloud.sdk import Context, HealthReport, Provider, operation

log = logging.getLogger("mlcloud.mlinference")


class MlInference(Provider):
    def __init__(self) -> None:
        super().__init__()
        self.registries: dict[str, ModelRegistry] = {}  # by linked actor id
        self.metrics: dict[str, RouteMetrics] = {}  # by linked actor id
        self.ctx: Context | None = None
        self.bindle: AsyncClient | None = None
        self.fetch: Fetch | None = None
        self.inference_config = InferenceConfig()
        self._events: set[asyncio.Future] = set()

    async def on_start(self, ctx: Context) -> None:
        self.ctx = ctx
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
            self.metrics[link.actor_id] = RouteMetrics()
        elif models.batching is not None:
            await registry.set_batching(models.batching)
        await registry.apply(models.routes, models.engines)
        log.info("link from %s: routes %s", link.actor_id[:8], models.routes)

    async def until_ready(self) -> None:
        # Calls come only once the linked models have loaded (or failed): a restarted instance's
        # callers wait for it rather than get 503 ModelLoading (models relinked later do answer that).
        await asyncio.gather(*(registry.wait_ready() for registry in self.registries.values()))

    async def on_link_del(self, link: LinkDefinition) -> None:
        registry = self.registries.pop(link.actor_id, None)
        self.metrics.pop(link.actor_id, None)
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
        registry = self._registry(ctx.caller)
        timer = self.metrics[ctx.caller].start(request.model)
        try:
            tensor = await registry.predict(request.model, request.tensor, request.index)
        except MLCloudError:
            timer.failed()
            raise
        timer.succeeded()
        return InferenceOutput(result="Success", tensor=tensor)

    @operation(MODEL_STATUS)
    async def status(self, ctx: Context, request: ModelStatusRequest) -> list[ModelInfo]:
        actor = request.actor if ctx.from_host and request.actor else ctx.caller
        infos = self._registry(actor).status(request.model or None)
        return [self.metrics[actor].annotate(info) for info in infos]

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
