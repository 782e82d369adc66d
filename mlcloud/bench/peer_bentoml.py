"""The bench's BentoML peer: a service serving the bench's pipeline (see mlcloud.bench.peers).

Runs inside the peer's own venv, where mlcloud is not installed: the pipeline comes from
``mlcloud/bench/workload.py`` loaded by path, as in :mod:`mlcloud.bench.peer_mlserver`.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path
from typing import Any

import bentoml


def load_pipeline() -> Any:
    project = Path(os.environ["MLCLOUD_BENCH_PROJECT"])
    spec = importlib.util.spec_from_file_location("_bench_workload", project / "mlcloud" / "bench" / "workload.py")
    assert spec is not None and spec.loader is not None
    workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workload)
    return workload.peer_pipeline(Path(os.environ["MLCLOUD_BENCH_BUILD_DIR"]))


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.pipeline = load_pipeline()

    @bentoml.api  # type: ignore[untyped-decorator]  # BentoML is not installed beside mlcloud
    def matches(self, image: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.pipeline.classify(base64.b64decode(image))
        return found
