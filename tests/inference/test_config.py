"""Inference configuration: environment variables and the reserved keys of a link's values."""

from __future__ import annotations

import os

import pytest

from mlcloud.errors import ConfigError
from mlcloud.inference.config import BatchingConfig, InferenceConfig, parse_link_values
from mlcloud.settings import Settings


def _from_env(environ: dict[str, str]) -> InferenceConfig:
    return InferenceConfig.from_settings(Settings.from_env(environ))


def test_defaults_leave_batching_off() -> None:
    config = _from_env({})
    assert config.engine is None and not config.batching.enabled
    assert config.predict_workers == max(2, os.cpu_count() or 2)  # a run per core


def test_environment_sets_engine_threads_and_batching() -> None:
    config = _from_env(
        {"MLCLOUD_INFERENCE_ENGINE": "Tract", "MLCLOUD_INFERENCE_INTRA_OP_THREADS": "1",
         "MLCLOUD_INFERENCE_BATCH_MAX_SIZE": "16", "MLCLOUD_INFERENCE_BATCH_MAX_WAIT_MS": "3"}
    )
    assert config.engine == "tract" and config.engine_options.intra_op_threads == 1
    assert config.batching == BatchingConfig(enabled=True, max_batch_size=16, max_wait=0.003)
    with pytest.raises(ConfigError):
        _from_env({"MLCLOUD_INFERENCE_ENGINE": "torch"})
    with pytest.raises(ConfigError, match="MLCLOUD_INFERENCE_BATCH_MAX_SIZE='lots' is not a number"):
        _from_env({"MLCLOUD_INFERENCE_BATCH_MAX_SIZE": "lots"})


def test_link_values_split_into_routes_engines_and_batching() -> None:
    links = parse_link_values(
        {"mobilenetv27": "efficientnet-lite0/1.0.0", "plus3": "plus3/0.1.0", "engine": "tract",
         "engine.plus3": "onnxruntime", "batch_max_size": "4"}
    )
    assert links.routes == {"mobilenetv27": "efficientnet-lite0/1.0.0", "plus3": "plus3/0.1.0"}
    assert links.engines == {"mobilenetv27": "tract", "plus3": "onnxruntime"}
    assert links.batching is not None and links.batching.enabled and links.batching.max_batch_size == 4
    assert parse_link_values({"identity": "identity_model/0.2.0"}).batching is None
    with pytest.raises(ConfigError, match="engine.plus3"):
        parse_link_values({"engine.plus3": "caffe"})
