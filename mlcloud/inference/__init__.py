"""The mlinference provider's inference layer: engines, model metadata, registry, batching, cache.

Plain Python with no lattice in it; the provider's entry point wires it to NATS and Bindle::

    async with AsyncClient(settings.effective_bindle_url) as bindle:
        fetch = bindle_fetcher(bindle, ParcelCache(settings.state_dir / "parcels"),
                               lambda: creator_keyring(settings))
        async with ModelRegistry(fetch, InferenceConfig.from_settings(settings)) as registry:
            links = parse_link_values(link.values)
            await registry.apply(links.routes, links.engines)
            tensor = await registry.predict("identity", request.tensor)
"""

from mlcloud.inference.batching import AdaptiveBatcher
from mlcloud.inference.cache import ParcelCache
from mlcloud.inference.config import BatchingConfig, InferenceConfig, LinkModels, parse_link_values
from mlcloud.inference.engines import create_engine, engine_name_for
from mlcloud.inference.engines.base import Engine, EngineOptions, Session, TensorSpec
from mlcloud.inference.fetch import bindle_fetcher, creator_keyring
from mlcloud.inference.metadata import ExecutionTarget, GraphEncoding, ModelMetadata
from mlcloud.inference.registry import ModelKey, ModelRegistry

__all__ = [
    "AdaptiveBatcher",
    "BatchingConfig",
    "Engine",
    "EngineOptions",
    "ExecutionTarget",
    "GraphEncoding",
    "InferenceConfig",
    "LinkModels",
    "ModelKey",
    "ModelMetadata",
    "ModelRegistry",
    "ParcelCache",
    "Session",
    "TensorSpec",
    "bindle_fetcher",
    "create_engine",
    "creator_keyring",
    "engine_name_for",
    "parse_link_values",
]
