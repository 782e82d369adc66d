"""The bench's MLServer peer: a custom runtime serving the bench's pipeline (see mlcloud.bench.peers).

Runs inside the peer's own venv, where mlcloud is not installed: the pipeline comes from
``mlcloud/bench/workload.py`` loaded by path (:func:`load_pipeline`).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


def load_pipeline() -> Any:
    """The bench's Pipeline on onnxruntime's default session, from the files the bench names."""
    project = Path(os.environ["MLCLOUD_BENCH_PROJECT"])
    spec = importlib.util.spec_from_file_location("_bench_workload", project / "mlcloud" / "bench" / "workload.py")
    assert spec is not None and spec.loader is not None
    workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workload)
    return workload.peer_pipeline(Path(os.environ["MLCLOUD_BENCH_BUILD_DIR"]))


class Classifier(MLModel):  # type: ignore[misc]  # MLServer is not installed beside mlcloud
    async def load(self) -> bool:
        self.pipeline = load_pipeline()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        item = payload.inputs[0].data[0]
        image = base64.b64decode(item)
        found = self.pipeline.classify(image)
        return InferenceResponse(model_name=self.name,
                                 outputs=[StringCodec.encode_output("matches", [json.dumps(found)])])
