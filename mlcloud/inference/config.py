"""Configuration of the inference layer, and how a link's values split into routes and options.

:class:`InferenceConfig` holds the provider-wide knobs (engine override, onnxruntime threads,
thread-pool sizes, batching, fetch retries). ``from_settings`` takes them from the
``inference_*`` fields of :class:`mlcloud.settings.Settings` (``MLCLOUD_INFERENCE_*``), so a
host's child process sees what the host was started with, as for every other setting.

A link between the api actor and the mlinference provider carries ``route → bindle id`` pairs
(DESIGN §4), e.g. ``{"mobilenetv27": "efficientnet-lite0/1.0.0", "plus3": "plus3/0.1.0"}``. A few
reserved keys tune it instead of naming routes (:func:`parse_link_values`):

    engine                  engine override for every model of the link (onnxruntime | tract | litert)
    engine.<route>          engine override for one route
    batch_max_size          enable adaptive batching with this maximum batch (0 or 1: off)
    batch_max_wait_ms       how long a forming batch may wait for more requests
    split.<route>           the api actor's experiment on a route (mlcloud.experiments), no route here
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlcloud.errors import ConfigError
from mlcloud.experiments import SPLIT_PREFIX
from mlcloud.inference.engines.base import EngineOptions
from mlcloud.inference.metadata import ENGINES
from mlcloud.settings import Settings

N = TypeVar("N", int, float)  # the kind of number a link value is read as

DEFAULT_BATCH_MAX_SIZE = 8
DEFAULT_BATCH_MAX_WAIT = 0.002  # seconds; only paid once a batch has started forming
DEFAULT_LOAD_WORKERS = 2
DEFAULT_FETCH_ATTEMPTS = 3
DEFAULT_FETCH_BACKOFF = 0.5


def _default_predict_workers() -> int:
    # A run per core: onnxruntime releases the GIL, so runs overlap, and one-thread runs on
    # every core use them all. More threads only add runs that wait for a core, each holding its
    # activations (~10 MB for EfficientNet-Lite0: 4 threads instead of 2 peaked 19 MB higher on
    # 2 cores, for no measurable throughput; docs/performance.md, "Memory").
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    enabled: bool = False
    max_batch_size: int = DEFAULT_BATCH_MAX_SIZE
    max_wait: float = DEFAULT_BATCH_MAX_WAIT

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait < 0:
            raise ConfigError(
                f"batching needs max_batch_size >= 1 and max_wait >= 0, got "
                f"{self.max_batch_size} and {self.max_wait}"
            )


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    engine: str | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    predict_workers: int = field(default_factory=_default_predict_workers)
    load_workers: int = DEFAULT_LOAD_WORKERS
    fetch_attempts: int = DEFAULT_FETCH_ATTEMPTS
    fetch_backoff: float = DEFAULT_FETCH_BACKOFF
    batching: BatchingConfig = field(default_factory=BatchingConfig)

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; expected {' | '.join(ENGINES)}")

    @property
    def engine_options(self) -> EngineOptions:
        return EngineOptions(self.intra_op_threads, self.inter_op_threads)

    def replace(self, **changes: Any) -> InferenceConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceConfig:
        """The knobs of ``settings.inference_*`` (``MLCLOUD_INFERENCE_ENGINE``, ``…_INTRA_OP_THREADS``,
        ``…_INTER_OP_THREADS``, ``…_PREDICT_WORKERS``, ``…_LOAD_WORKERS``, ``…_BATCH_MAX_SIZE``
        (> 1 enables batching), ``…_BATCH_MAX_WAIT_MS``); unset ones keep these defaults."""
        values: dict[str, Any] = {}
        if settings.inference_engine:
            values["engine"] = settings.inference_engine.strip().lower()
        for name in ("intra_op_threads", "inter_op_threads", "predict_workers", "load_workers"):
            if (value := getattr(settings, "inference_" + name)) is not None:
                values[name] = value
        size, wait = settings.inference_batch_max_size, settings.inference_batch_max_wait_ms
        if size is not None or wait is not None:
            values["batching"] = _batching(size, wait, BatchingConfig())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class LinkModels:
    """A link's values split: the route map, engine overrides and batching."""

    routes: dict[str, str]
    engines: dict[str, str]
    batching: BatchingConfig | None = None


def parse_link_values(values: Mapping[str, str], base: BatchingConfig | None = None) -> LinkModels:
    routes: dict[str, str] = {}
    engines: dict[str, str] = {}
    default_engine = None
    size: int | None = None
    wait: float | None = None
    for key, raw in values.items():
        value = str(raw).strip()
        if key == "engine" or key.startswith("engine."):
            if value.lower() not in ENGINES:
                raise ConfigError(f"link value {key}={value!r}: expected {' | '.join(ENGINES)}")
            if key == "engine":
                default_engine = value.lower()
            else:
                engines[key.removeprefix("engine.")] = value.lower()
        elif key == "batch_max_size":
            size = _link_number(key, value, int)
        elif key == "batch_max_wait_ms":
            wait = _link_number(key, value, float)
        elif key.startswith(SPLIT_PREFIX):
            continue  # the api actor's (mlcloud.experiments); its arms are routes of their own
        else:
            if not value:
                raise ConfigError(f"link value {key!r} names no bindle")
            routes[key] = value
    if default_engine is not None:
        engines = {route: engines.get(route, default_engine) for route in routes}
    batching = None
    if size is not None or wait is not None:
        batching = _batching(size, wait, base or BatchingConfig())
    return LinkModels(routes, engines, batching)


def _link_number(key: str, value: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"link value {key}={value!r} is not a number") from None


def _batching(size: int | None, wait_ms: float | None, base: BatchingConfig) -> BatchingConfig:
    max_size = size if size is not None else base.max_batch_size
    return BatchingConfig(
        enabled=max_size > 1 if size is not None else base.enabled,
        max_batch_size=max(1, max_size),
        max_wait=wait_ms / 1000 if wait_ms is not None else base.max_wait,
    )
