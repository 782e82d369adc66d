"""The bench's BentoML peer: a service serving the bench's pipeline (see mlcloud.bench.peers).

Runs inside the peer's own venv, where mlcloud is not installed (see peer_pipeline).
"""

from __future__ import annotations

import base64
from typing import Any

import bentoml
from peer_pipeline import load_pipeline  # copied beside this file by the bench


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.pipeline = load_pipeline()

    @bentoml.api  # type: ignore[untyped-decorator]  # BentoML is not installed beside mlcloud
    def matches(self, image: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.pipeline.classify(base64.b64decode(image))
        return found
