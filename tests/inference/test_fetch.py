"""The registry fed by a real Bindle server through the verified parcel cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mlcloud.bindle.client import AsyncClient
from mlcloud.bindle.models import BindleSpec, Condition, Group, Invoice, Label, Parcel
from mlcloud.errors import InvalidModel
from mlcloud.inference import InferenceConfig, ModelRegistry, ParcelCache
from mlcloud.inference.fetch import bindle_fetcher
from mlcloud.interfaces import Tensor
from mlcloud.testing.bindle import BindleServerProcess

from .models import metadata, onnx_model


def _invoice(name: str, version: str, parcels: dict[str, tuple[bytes, str]]) -> Invoice:
    return Invoice(
        bindle_version="1.0.0",
        bindle=BindleSpec(name=name, version=version),
        group=[Group(name=g) for g in sorted({group for _, group in parcels.values()})],
        parcel=[
            Parcel(
                label=Label(sha256=hashlib.sha256(data).hexdigest(), name=file, size=len(data)),
                conditions=Condition(member_of=[group]),
            )
            for file, (data, group) in parcels.items()
        ],
    )


async def test_models_load_from_bindle_and_then_from_the_cache(tmp_path: Path) -> None:
    model = onnx_model(tmp_path / "identity.onnx").read_bytes()
    meta = json.dumps(metadata(dims=[-1, 4])).encode()
    good = _invoice("identity_model", "0.2.0", {"identity.onnx": (model, "model"), "metadata.json": (meta, "metadata")})
    nometa = _invoice("nometa", "1.0.0", {"identity.onnx": (model, "model")})
    files = {hashlib.sha256(d).hexdigest(): d for d in (model, meta)}
    cache = ParcelCache(tmp_path / "parcels")
    config = InferenceConfig(fetch_attempts=1)
    async with BindleServerProcess(tmp_path / "bindle") as server, AsyncClient(server.url) as client:
        await client.push(good, files)
        await client.push(nometa, files)
        async with ModelRegistry(bindle_fetcher(client, cache), config) as registry:
            await registry.apply({"identity": "identity_model/0.2.0", "nometa": "nometa/1.0.0"})
            await registry.wait_ready(timeout=20)
            answer = await registry.predict("identity", Tensor.from_numpy(np.ones((1, 4), np.float32)))
            assert answer.to_numpy().tolist() == [[1, 1, 1, 1]]
            with pytest.raises(InvalidModel, match="no parcel in group 'metadata'"):
                await registry.predict("nometa", Tensor.from_numpy(np.ones((1, 4), np.float32)))
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(files)
