"""The model registry of the mlinference provider: which model serves which route, and its life.

Routes (the model names in URLs) map to bindle ids through the link's values; :meth:`apply`
takes that whole mapping each time it changes. A model is identified by ``(bindle id, engine
override)`` and loaded once, however many routes map to it. Each model moves through
:class:`ModelState`::

    LOADING ──► READY
       │
       └──────► FAILED (reason)   ── applying a mapping that names it again retries the load

Loading runs in the background (the fetch on the event loop, the engine in a small thread
pool), never in the request path: :meth:`predict` answers at once with ContextNotFound (unknown
route), ModelLoading (503 with Retry-After upstream) or InvalidModel (the reason it failed).

Changing a route to another bindle swaps it live, as MLServer reloads: the new model loads while
the old one keeps serving, the route switches when the new one is READY, and the old one is
dropped once its in-flight requests have finished; no request fails because of the swap. If the
new model fails to load, the old one keeps serving and :meth:`status` reports the failure. A route
that is new, or whose current model is not READY, points at the new model at once.

Inference runs in a thread pool without any lock (engines are thread-safe; onnxruntime and tract
release the GIL). With batching enabled, concurrent requests for one model whose batch dimension
is symbolic go through an :class:`~mlcloud.inference.batching.AdaptiveBatcher`.

Everything here runs on one event loop; only engine calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from mlcloud.errors import (
    ContextNotFound,
    CorruptInputTensor,
    InferenceError,
    InferenceRuntimeError,
    InvalidModel,
    MLCloudError,
    ModelLoading,
)
from mlcloud.inference.batching import AdaptiveBatcher
from mlcloud.inference.config import BatchingConfig, InferenceConfig
from mlcloud.inference.engines import create_engine
from mlcloud.inference.engines.base import Session
from mlcloud.inference.metadata import ModelMetadata
from mlcloud.inference.pixels import PIXEL_TYPE, PixelNormalization
from mlcloud.interfaces import ModelInfo, ModelState, Tensor
from mlcloud.metrics import observe_execution, version_of

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[tuple[Path, Any]]]
"""``fetch(bindle_id) -> (model file path, metadata JSON bytes / dict / ModelMetadata)``."""

EventHook = Callable[[str, ModelInfo], None]
"""Called on the event loop with an event name (``model_loaded``, ``model_load_failed``,
``model_swapped``, ``model_unloaded``) and the route's :class:`ModelInfo`."""

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class ModelKey:
    bindle_id: str
    engine: str | None = None  # None: the metadata's choice, else the default


class LoadedModel:
    """One model, shared by every route that maps to its key."""

    def __init__(self, key: ModelKey) -> None:
        self.key = key
        self.state = ModelState.LOADING
        self.reason = ""
        self.engine = key.engine or ""
        self.metadata: ModelMetadata | None = None
        self.session: Session | None = None
        self.pixels: PixelNormalization | None = None  # set when the model takes 8-bit pixels
        self.batcher: AdaptiveBatcher | None = None
        self.task: asyncio.Task[None] | None = None
        self.refs = 0  # route slots (active or pending) naming this model
        self.load_seconds = 0.0  # the last successful load's
        self.inflight = 0  # requests currently using the session
        self.retired = False

    @property
    def loading(self) -> bool:
        return self.task is not None and not self.task.done()

    def normalisation_for(self, array: np.ndarray) -> PixelNormalization | None:
        """The normalisation to apply when ``array`` is 8-bit pixels for a model that takes them."""
        return self.pixels if self.pixels is not None and array.dtype == np.uint8 else None

    def run(self, array: np.ndarray) -> list[np.ndarray]:
        """The session on ``array`` (pixels normalised first): in a worker thread."""
        assert self.session is not None
        pixels = self.normalisation_for(array)
        return self.session.predict([array if pixels is None else pixels.normalise(array)])


@dataclass(slots=True)
class _Route:
    name: str
    active: LoadedModel
    pending: LoadedModel | None = None
    swap_error: str = ""


class ModelRegistry:
    """Owns the models of one mlinference provider. Use as ``async with ModelRegistry(...)``."""

    def __init__(
        self, fetch: Fetch, config: InferenceConfig | None = None, *, on_event: EventHook | None = None
    ) -> None:
        self.config = config or InferenceConfig()
        self._fetch = fetch
        self._on_event = on_event
        self._batching = self.config.batching
        self._routes: dict[str, _Route] = {}
        self._models: dict[ModelKey, LoadedModel] = {}
        self._load_pool = ThreadPoolExecutor(self.config.load_workers, "mlinference-load")
        self._predict_pool = ThreadPoolExecutor(self.config.predict_workers, "mlinference-predict")
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def __aenter__(self) -> ModelRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- configuration ---------------------------------------------------------------------
    async def apply(
        self, mapping: Mapping[str, str], engines: Mapping[str, str] | None = None
    ) -> None:
        """Make the routes exactly ``mapping`` (route → bindle id); returns without waiting.

        ``engines`` overrides the engine per route (else the config's ``engine``, else the
        metadata's). Loads start in the background; see :meth:`wait_ready`.
        """
        if self._closed:
            raise InferenceRuntimeError("the model registry is closed")
        engines = engines or {}
        for name in [r for r in self._routes if r not in mapping]:
            dropped = self._routes.pop(name)
            self._release(dropped.active, name)
            if dropped.pending is not None:
                self._release(dropped.pending, name)
        for name, bindle_id in mapping.items():
            key = ModelKey(bindle_id.strip(), engines.get(name) or self.config.engine)
            route = self._routes.get(name)
            if route is None:
                self._routes[name] = _Route(name, self._acquire(key))
                continue
            if route.active.key == key:
                if route.pending is not None:  # mapped back before the swap finished
                    self._release(route.pending, name)
                    route.pending = None
                route.swap_error = ""
                self._retry_if_failed(route.active)
                continue
            if route.pending is not None and route.pending.key == key:
                self._retry_if_failed(route.pending)
                continue
            new = self._acquire(key)
            if route.pending is not None:
                self._release(route.pending, name)
                route.pending = None
            route.swap_error = ""
            if route.active.state is ModelState.READY:
                route.pending = new  # keep serving the old model until the new one is ready
                if new.state is ModelState.READY:
                    self._switch(route)
            else:
                old, route.active = route.active, new
                self._release(old, name)
        self._notify()

    async def set_batching(self, batching: BatchingConfig) -> None:
        """Change batching live: new batchers first, old ones drained, then stopped."""
        self._batching = batching
        for model in self._models.values():
            if model.state is ModelState.READY:
                old, model.batcher = model.batcher, self._make_batcher(model)
                if old is not None:
                    self._spawn(_drain_and_close(old), "batcher-drain")

    # -- requests --------------------------------------------------------------------------
    async def predict(self, route: str, tensor: Tensor, index: int = 0) -> Tensor:
        """Run the route's model on ``tensor``; the answer is output ``index`` (default 0)."""
        model = self._serving(route)
        outputs = await self._infer(model, tensor.to_numpy(), route)
        if not 0 <= index < len(outputs):
            raise CorruptInputTensor(
                f"model {route!r} has {len(outputs)} outputs; index {index} does not name one"
            )
        try:
            return Tensor.from_numpy(outputs[index])
        except InferenceError as exc:
            raise InferenceRuntimeError(f"model {route!r} produced an output: {exc.message}") from exc

    def _serving(self, route: str) -> LoadedModel:
        entry = self._routes.get(route)
        if entry is None:
            raise ContextNotFound(f"no model is linked as {route!r}")
        model = entry.active
        if model.state is ModelState.LOADING:
            raise ModelLoading(
                f"model {route!r} ({model.key.bindle_id}) is still loading",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if model.state is ModelState.FAILED:
            raise InvalidModel(f"model {route!r} ({model.key.bindle_id}) failed to load: {model.reason}")
        return model

    def bindle_of(self, route: str) -> str:
        """The bindle id serving ``route`` now; empty when no such route is linked."""
        entry = self._routes.get(route)
        return entry.active.key.bindle_id if entry is not None else ""

    async def _infer(self, model: LoadedModel, array: np.ndarray, route: str) -> list[np.ndarray]:
        session = model.session
        assert session is not None
        # Checked here, before batching, so one bad request cannot fail a batch.
        try:
            session.input.check(array, dtype=np.dtype(np.uint8) if model.normalisation_for(array) else None)
        except CorruptInputTensor as exc:
            if model.pixels is None:
                raise
            raise CorruptInputTensor(f"{exc.message}; 8-bit pixels (ValueU8) of that shape are taken too") from None
        model.inflight += 1
        labels = (route, version_of(model.key.bindle_id))
        try:
            batcher = model.batcher
            if batcher is not None and batcher.alive:
                return await batcher.submit(array, labels)
            loop = asyncio.get_running_loop()
            submitted = time.perf_counter()
            outputs, started, finished = await loop.run_in_executor(self._predict_pool, _timed, model.run, array)
            observe_execution([(*labels, started - submitted)], finished - started, len(array))
            return outputs
        finally:
            model.inflight -= 1
            if model.retired and model.inflight == 0:
                self._close(model)

    # -- state -----------------------------------------------------------------------------
    def state(self, route: str) -> ModelState:
        entry = self._routes.get(route)
        if entry is None:
            raise ContextNotFound(f"no model is linked as {route!r}")
        return entry.active.state

    @property
    def routes(self) -> dict[str, str]:
        return {name: r.active.key.bindle_id for name, r in self._routes.items()}

    @property
    def ready(self) -> bool:
        """True when every route's model is READY (``GET /v2/health/ready``)."""
        return all(r.active.state is ModelState.READY for r in self._routes.values())

    def status(self, route: str | None = None) -> list[ModelInfo]:
        """What ``GET /models/{m}`` and the washboard show, for one route or all."""
        if route is not None and route not in self._routes:
            raise ContextNotFound(f"no model is linked as {route!r}")
        names = [route] if route is not None else sorted(self._routes)
        return [self._info(self._routes[name]) for name in names]

    async def wait_ready(self, routes: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Wait until the routes' loads and swaps have settled (READY or FAILED)."""
        wanted = None if routes is None else set(routes)

        def settled() -> bool:
            return all(
                r.active.state is not ModelState.LOADING and r.pending is None
                for name, r in self._routes.items()
                if wanted is None or name in wanted
            )

        async with asyncio.timeout(timeout):
            while not settled():
                await self._changed.wait()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [m.task for m in self._models.values() if m.task is not None]
        for task in tasks:
            task.cancel()
        batchers = [m.batcher for m in self._models.values() if m.batcher is not None]
        await asyncio.gather(*tasks, *(b.aclose() for b in batchers), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        for model in self._models.values():
            if model.session is not None:
                model.session.unload()
        self._routes.clear()
        self._models.clear()
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._predict_pool.shutdown(wait=False, cancel_futures=True)
        self._notify()

    # -- lifecycle internals ---------------------------------------------------------------
    def _acquire(self, key: ModelKey) -> LoadedModel:
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = LoadedModel(key)
            self._start_load(model)
        else:
            self._retry_if_failed(model)
        model.refs += 1
        return model

    def _release(self, model: LoadedModel, route: str) -> None:
        model.refs -= 1
        if model.refs > 0:
            return
        self._models.pop(model.key, None)
        if model.task is not None and not model.task.done():
            model.task.cancel()
        model.retired = True
        if model.inflight == 0:
            self._close(model)
        self._emit("model_unloaded", route, model)

    def _close(self, model: LoadedModel) -> None:
        # Only once nothing runs on it: in-flight requests finish on the model they started on.
        batcher, model.batcher = model.batcher, None
        if batcher is not None:
            self._spawn(batcher.aclose(), "batcher-close")
        session, model.session = model.session, None
        if session is not None:
            session.unload()
            log.info("unloaded %s", model.key.bindle_id)
            # Off the event loop: a trim walks the whole heap.
            self._load_pool.submit(_return_freed_memory)

    def _retry_if_failed(self, model: LoadedModel) -> None:
        if model.state is ModelState.FAILED and not model.loading:
            log.info("retrying the load of %s", model.key.bindle_id)
            model.state, model.reason = ModelState.LOADING, ""
            self._start_load(model)

    def _start_load(self, model: LoadedModel) -> None:
        model.task = asyncio.get_running_loop().create_task(
            self._load(model), name=f"load:{model.key.bindle_id}"
        )

    async def _load(self, model: LoadedModel) -> None:
        key = model.key
        log.info("loading %s (engine %s)", key.bindle_id, key.engine or "from metadata")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            path, raw_metadata = await self._fetch_with_retries(key.bindle_id)
            metadata = ModelMetadata.parse(raw_metadata)
            engine = create_engine(metadata, key.engine, self.config.engine_options)
            session = await loop.run_in_executor(self._load_pool, engine.load, path, metadata)
            await loop.run_in_executor(self._load_pool, _warm_up, session, key.bindle_id)
        except asyncio.CancelledError:
            raise
        except MLCloudError as exc:
            self._failed(model, f"{exc.kind}: {exc.message}")
        except Exception as exc:  # a bug or an unexpected library error: still a failed load
            log.exception("loading %s failed unexpectedly", key.bindle_id)
            self._failed(model, f"{type(exc).__name__}: {exc}")
        else:
            if model.retired:  # dropped while loading
                session.unload()
                return
            model.engine, model.metadata, model.session = engine.name, metadata, session
            model.pixels = _pixel_input(metadata, session, key.bindle_id)
            model.batcher = self._make_batcher(model)
            model.load_seconds = loop.time() - started
            model.state = ModelState.READY
            log.info("loaded %s on %s", key.bindle_id, engine.name)
            for route in list(self._routes.values()):
                if route.pending is model:
                    self._switch(route)
                elif route.active is model:
                    self._emit("model_loaded", route.name, model)
            self._notify()

    async def _fetch_with_retries(self, bindle_id: str) -> tuple[Path, Any]:
        attempts = max(1, self.config.fetch_attempts)
        for attempt in range(1, attempts + 1):
            try:
                path, metadata = await self._fetch(bindle_id)
                return Path(path), metadata
            except asyncio.CancelledError:
                raise
            except InferenceError:
                raise  # the bytes arrived and are wrong: fetching again will not help
            except Exception as exc:
                if attempt == attempts:
                    raise
                delay = self.config.fetch_backoff * 2 ** (attempt - 1)
                log.warning("fetching %s failed (%s); retrying in %.1fs", bindle_id, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _failed(self, model: LoadedModel, reason: str) -> None:
        model.state, model.reason = ModelState.FAILED, reason
        log.error("model %s failed to load: %s", model.key.bindle_id, reason)
        for route in list(self._routes.values()):
            if route.pending is model:
                route.pending = None
                route.swap_error = f"swap to {model.key.bindle_id} failed: {reason}"
                self._emit("model_load_failed", route.name, model)
                self._release(model, route.name)
            elif route.active is model:
                self._emit("model_load_failed", route.name, model)
        self._notify()

    def _switch(self, route: _Route) -> None:
        old, new = route.active, route.pending
        assert new is not None
        route.active, route.pending, route.swap_error = new, None, ""
        log.info("route %s now served by %s (was %s)", route.name, new.key.bindle_id, old.key.bindle_id)
        self._emit("model_swapped", route.name, new)
        self._release(old, route.name)

    def _make_batcher(self, model: LoadedModel) -> AdaptiveBatcher | None:
        session = model.session
        if session is None or not self._batching.enabled or self._batching.max_batch_size < 2:
            return None
        batchable = session.input.batch_dim_symbolic and all(
            o.shape is None or (len(o.shape) > 0 and o.shape[0] is None) for o in session.outputs
        )
        if not batchable:
            log.info("%s has a fixed batch dimension; batching stays off", model.key.bindle_id)
            return None
        return AdaptiveBatcher(
            model.run,
            executor=self._predict_pool,
            max_batch_size=self._batching.max_batch_size,
            max_wait=self._batching.max_wait,
            name=model.key.bindle_id,
        )

    def _info(self, route: _Route) -> ModelInfo:
        model = route.active
        reason = model.reason
        if route.pending is not None:
            reason = f"swapping to {route.pending.key.bindle_id} ({route.pending.state.value})"
        elif route.swap_error:
            reason = f"{route.swap_error}; still serving {model.key.bindle_id}"
        session = model.session
        inputs = [s.to_info() for s in session.inputs] if session else []
        if inputs and model.pixels is not None:  # images may come as 8-bit pixels
            inputs[0] = msgspec.structs.replace(inputs[0], image_datatype=PIXEL_TYPE)
        return ModelInfo(
            name=route.name,
            bindle_id=model.key.bindle_id,
            engine=model.engine,
            state=model.state,
            reason=reason,
            inputs=inputs,
            outputs=[s.to_info() for s in session.outputs] if session else [],
            feature_names=list(model.metadata.feature_names or ()) if model.metadata else [],
            load_seconds=round(model.load_seconds, 3),
        )

    def _emit(self, event: str, route: str, model: LoadedModel) -> None:
        if self._on_event is None:
            return
        entry = self._routes.get(route)
        info = self._info(entry) if entry is not None and entry.active is model else ModelInfo(
            name=route, bindle_id=model.key.bindle_id, engine=model.engine,
            state=model.state, reason=model.reason,
        )
        try:
            self._on_event(event, info)
        except Exception:
            log.exception("event hook failed for %s", event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim``; elsewhere nothing).

    An unloaded session's memory is freed but glibc keeps most of it in its arenas, so without
    this each swap of a model left ~15 MB more resident (the soak of docs/reliability.md).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _drain_and_close(batcher: AdaptiveBatcher) -> None:
    # Requests already queued on the old batcher finish there; new ones use the new batcher.
    while batcher.alive and not batcher.idle:
        await asyncio.sleep(0.001)
    await batcher.aclose()


def _pixel_input(metadata: ModelMetadata, session: Session, bindle_id: str) -> PixelNormalization | None:
    """The metadata's normalisation when the model's input can take pixels, else None (and why)."""
    pixels = metadata.pixel_normalization
    if pixels is None:
        return None
    problem = pixels.misfit(session.input.dtype, session.input.shape)
    if problem:
        log.warning("%s: images go as f32, not 8-bit pixels: %s", bindle_id, problem)
        return None
    return pixels


def _timed(run: Callable[[np.ndarray], list[np.ndarray]], array: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    """``run(array)`` in a worker thread, with when it started and finished (``time.perf_counter``)."""
    started = time.perf_counter()
    outputs = run(array)
    return outputs, started, time.perf_counter()


def _warm_up(session: Session, name: str) -> None:
    """One run on zeros so the first request does not pay for allocation and kernel setup."""
    spec = session.input
    if spec.shape is None:
        return
    try:
        session.warm_up([np.zeros([1 if d is None else d for d in spec.shape], dtype=spec.dtype)])
    except InferenceError as exc:
        log.warning("warm-up run of %s failed (%s); serving anyway", name, exc.message)
