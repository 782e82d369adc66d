"""The registry fed by a real Bindle server through the verified parcel cache, and the invoice
signatures it checks before fetching anything."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from mlcloud.bindle.client import AsyncClient
from mlcloud.bindle.models import BindleSpec, Condition, Group, Invoice, Label, Parcel, canonical_id, decode, to_toml
from mlcloud.bindle.signing import keyring_of_accounts
from mlcloud.errors import InvalidModel
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.inference import InferenceConfig, ModelRegistry, ParcelCache, creator_keyring
from mlcloud.inference.fetch import bindle_fetcher
from mlcloud.interfaces import ModelState, Tensor
from mlcloud.oci.keys import load_account
from mlcloud.settings import Settings
from mlcloud.testing.bindle import BindleServerProcess

from .models import metadata, onnx_model

ONES = Tensor.from_numpy(np.ones((1, 4), np.float32))


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


def _model_files(tmp_path: Path, op: str = "Identity") -> tuple[bytes, bytes]:
    model = onnx_model(tmp_path / f"{op}.onnx", op=op, constant=None if op == "Identity" else 1.0).read_bytes()
    return model, json.dumps(metadata(dims=[-1, 4])).encode()


def _rewrite_stored(store: Path, bindle_id: str, change: dict[str, object]) -> None:
    """Change an invoice on the server's disk, as someone with write access to it could."""
    name, _, version = bindle_id.rpartition("/")
    path = store / "invoices" / canonical_id(name, version) / "invoice.toml"
    invoice = decode(path.read_bytes(), Invoice)
    path.write_text(to_toml(msgspec.structs.replace(invoice, **change)))


async def test_models_load_from_bindle_and_then_from_the_cache(tmp_path: Path) -> None:
    model, meta = _model_files(tmp_path)
    good = _invoice("identity_model", "0.2.0", {"identity.onnx": (model, "model"), "metadata.json": (meta, "metadata")})
    nometa = _invoice("nometa", "1.0.0", {"identity.onnx": (model, "model")})
    files = {hashlib.sha256(d).hexdigest(): d for d in (model, meta)}
    account = KeyPair.generate(KeyKind.ACCOUNT)
    cache = ParcelCache(tmp_path / "parcels")
    config = InferenceConfig(fetch_attempts=1)
    async with BindleServerProcess(tmp_path / "bindle") as server, AsyncClient(server.url) as client:
        await client.push(good, files, creator=account)
        await client.push(nometa, files, creator=account)
        fetch = bindle_fetcher(client, cache, lambda: keyring_of_accounts([account.public_key]))
        async with ModelRegistry(fetch, config) as registry:
            await registry.apply({"identity": "identity_model/0.2.0", "nometa": "nometa/1.0.0"})
            await registry.wait_ready(timeout=20)
            answer = await registry.predict("identity", ONES)
            assert answer.to_numpy().tolist() == [[1, 1, 1, 1]]
            with pytest.raises(InvalidModel, match="no parcel in group 'metadata'"):
                await registry.predict("nometa", ONES)
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(files)


async def test_only_invoices_signed_by_a_trusted_creator_load_and_nothing_else_is_fetched(tmp_path: Path) -> None:
    model, meta = _model_files(tmp_path)
    evil, _ = _model_files(tmp_path, op="Add")  # y = x + 1: what a swapped parcel would serve
    parcels = {"model.onnx": (model, "model"), "metadata.json": (meta, "metadata")}
    files = {hashlib.sha256(d).hexdigest(): d for d in (model, meta, evil)}
    trusted, stranger = KeyPair.generate(KeyKind.ACCOUNT), KeyPair.generate(KeyKind.ACCOUNT)
    store = tmp_path / "bindle"
    cache = ParcelCache(tmp_path / "parcels")
    async with BindleServerProcess(store) as server, AsyncClient(server.url) as client:
        await client.push(_invoice("good", "1.0.0", parcels), files, creator=trusted)
        await client.push(_invoice("unsigned", "1.0.0", parcels), files)
        await client.push(_invoice("stranger", "1.0.0", parcels), files, creator=stranger)
        for name in ("swapped", "forged"):
            await client.push(_invoice(name, "1.0.0", parcels), files, creator=trusted)
        # The evil parcel gets into the store under an invoice of its own, then the trusted
        # invoices are edited on disk: one to point at it, one with altered signature bytes.
        await client.push(_invoice("carrier", "1.0.0", {"evil.onnx": (evil, "model")}), files)
        good = await client.get_invoice("good/1.0.0")
        assert good.parcel is not None
        evil_label = msgspec.structs.replace(good.parcel[0].label, sha256=hashlib.sha256(evil).hexdigest())
        _rewrite_stored(store, "swapped/1.0.0", {"parcel": [
            msgspec.structs.replace(good.parcel[0], label=evil_label), good.parcel[1]]})
        creator, host = (await client.get_invoice("forged/1.0.0")).signature or []
        flipped = bytearray(base64.b64decode(creator.signature))
        flipped[0] ^= 1
        _rewrite_stored(store, "forged/1.0.0", {"signature": [
            msgspec.structs.replace(creator, signature=base64.b64encode(bytes(flipped)).decode()), host]})
        await server.arestart()

        fetch = bindle_fetcher(client, cache, lambda: keyring_of_accounts([trusted.public_key]))
        async with ModelRegistry(fetch, InferenceConfig(fetch_attempts=1)) as registry:
            await registry.apply({name: f"{name}/1.0.0" for name in ("unsigned", "stranger", "swapped", "forged")})
            await registry.wait_ready(timeout=20)
            reasons = {info.name: info.reason for info in registry.status()}
            assert all(info.state is ModelState.FAILED and not info.inputs for info in registry.status())
            assert reasons["unsigned"] == (
                "InvalidModel: invoice unsigned/1.0.0 is not signed by a trusted creator: it has no creator signature")
            assert reasons["stranger"].startswith(
                f"InvalidModel: invoice stranger/1.0.0 is not signed by a trusted creator: creator key "
                f"{base64.b64encode(bytes(stranger.signing_key.verify_key)).decode()} ({stranger.public_key})")
            for name in ("swapped", "forged"):
                assert reasons[name].startswith(f"InvalidModel: invoice {name}/1.0.0: the creator signature by "
                                                f"'{trusted.public_key}'"), reasons[name]
                assert reasons[name].endswith("does not verify: the invoice changed after it was signed")
            with pytest.raises(InvalidModel, match="not signed by a trusted creator"):
                await registry.predict("unsigned", ONES)
            assert not cache.root.exists() or not any(cache.root.iterdir())  # no parcel was fetched

            await registry.apply({"good": "good/1.0.0"})
            await registry.wait_ready(timeout=20)
            assert (await registry.predict("good", ONES)).to_numpy().tolist() == [[1, 1, 1, 1]]


def test_the_provider_trusts_the_local_account_and_the_trusted_issuers(tmp_path: Path) -> None:
    other = KeyPair.generate(KeyKind.ACCOUNT)
    settings = Settings.from_env({}, state_dir=tmp_path, keys_dir=tmp_path / "keys", trusted_issuers=other.public_key)
    local = load_account(settings.keys_dir)
    assert [k.label for k in creator_keyring(settings).key] == sorted([local.public_key, other.public_key])
