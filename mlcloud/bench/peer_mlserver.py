"""The bench's MLServer peer: a custom runtime serving the bench's pipeline (see mlcloud.bench.peers).

Runs inside the peer's own venv, where mlcloud is not installed (see peer_pipeline).
"""

from __future__ import annotations

import base64
import json

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_pipeline import load_pipeline  # copied beside this file by the bench


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
