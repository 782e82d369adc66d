"""Build → push → pull → verify against a real docker-registry, and every way to be refused."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

from mlcloud.identity import KeyKind, KeyPair
from mlcloud.oci import claims as claims_mod
from mlcloud.oci.build import BuiltArtifact, build, pack
from mlcloud.oci.cli import build_command, keys_command, push_command
from mlcloud.oci.client import RegistryClient
from mlcloud.oci.errors import (
    ArtifactNotFound,
    HashMismatch,
    InvalidSignature,
    PullFailed,
    SubjectMismatch,
    UnsafeArchive,
    UntrustedIssuer,
)
from mlcloud.oci.keys import load_account
from mlcloud.oci.pull import ArtifactStore
from mlcloud.oci.push import push
from mlcloud.oci.registry import EmbeddedRegistry
from mlcloud.settings import Settings

from .conftest import free_port


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _build(folder: Path, settings: Settings) -> BuiltArtifact:
    return build(folder, settings.keys_dir, settings.state_dir / "build" / folder.name)


def _unpacked(settings: Settings) -> list[Path]:
    root = settings.state_dir / "oci-cache" / "unpacked"
    return list(root.iterdir()) if root.exists() else []


def _requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every registry request the store makes, as (method, path)."""
    calls: list[tuple[str, str]] = []
    original = RegistryClient.do_request

    def recording(self: RegistryClient, url: str, method: str = "GET", *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append((method, urlparse(url).path))
        return original(self, url, method, *args, **kwargs)

    monkeypatch.setattr(RegistryClient, "do_request", recording)
    return calls


def _resign(token: str, account: KeyPair, **changes: object) -> str:
    claims = dataclasses.replace(claims_mod.decode_unverified(token), issuer=account.public_key, **changes)
    return claims_mod.sign(claims, account)


def test_build_push_pull_gives_the_verified_source(component: Path, settings: Settings) -> None:
    built = _build(component, settings)
    result = push(built, settings)
    assert str(result.reference).startswith(f"{settings.registry}/mlcloud/echo:0.1.0@sha256:")

    verified = ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:0.1.0")
    assert _tree(verified.path) == _tree(component)
    assert verified.digest == result.digest
    assert verified.claims.subject == built.subject_key and verified.claims.issuer == built.issuer_key
    assert verified.claims.caps == ("wasmcloud:mlinference",)
    assert verified.manifest.module == "echo"

    by_digest = ArtifactStore(settings).pull_and_verify(result.pinned)
    assert by_digest.path == verified.path


def test_manifest_layout(component: Path, settings: Settings) -> None:
    built = _build(component, settings)
    result = push(built, settings, "mlcloud/layout:1")
    client = RegistryClient(settings.registry, insecure=True)
    manifest = client.get_manifest(f"{settings.registry}/mlcloud/layout:1")
    assert manifest["config"]["mediaType"] == "application/vnd.mlcloud.component.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.mlcloud.component.layer.v1.tar+gzip"
    assert layer["digest"] == built.layer_digest
    assert manifest["annotations"]["dev.mlcloud.claims.jwt"] == built.token
    config = client.get_blob(f"{settings.registry}/mlcloud/layout:1", manifest["config"]["digest"]).json()
    assert config == built.manifest.to_dict()
    assert result.digest.startswith("sha256:")


def test_pulling_the_same_ref_twice_downloads_once(
    component: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(_build(component, settings), settings, "mlcloud/twice:0.1.0")
    calls = _requests(monkeypatch)
    ref = f"{settings.registry}/mlcloud/twice:0.1.0"
    first = ArtifactStore(settings).pull_and_verify(ref)
    assert [m for m, _ in calls] == ["HEAD", "GET", "GET"]
    assert "/blobs/" in calls[2][1]
    calls.clear()
    # A new store (another host process) shares the cache: only the tag is asked about.
    second = ArtifactStore(settings).pull_and_verify(ref)
    assert calls == [("HEAD", "/v2/mlcloud/twice/manifests/0.1.0")]
    assert second.path == first.path
    calls.clear()
    ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/twice@{first.digest}")
    assert calls == []


def test_pull_from_cache_works_after_the_registry_stops(make_component: Callable[..., Path], tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "own-registry", f"127.0.0.1:{free_port()}")
    settings = Settings(state_dir=tmp_path / "state", keys_dir=tmp_path / "state" / "keys", registry=reg.address)
    folder = make_component("offline")
    with reg:
        result = push(_build(folder, settings), settings)
        ArtifactStore(settings).pull_and_verify(f"{reg.address}/mlcloud/offline:0.1.0")
    started = time.monotonic()
    by_tag = ArtifactStore(settings).pull_and_verify(f"{reg.address}/mlcloud/offline:0.1.0")
    by_digest = ArtifactStore(settings).pull_and_verify(result.pinned)
    assert time.monotonic() - started < 2.0  # no retry loop stands between a host and its cache
    assert by_tag.digest == by_digest.digest == result.digest
    assert _tree(by_tag.path) == _tree(folder)
    # Offline is not unverified: trust still applies to the cached artifact (other keys: not the signer).
    with pytest.raises(UntrustedIssuer):
        ArtifactStore(settings.replace(keys_dir=tmp_path / "other-keys")).pull_and_verify(result.pinned)
    with pytest.raises(PullFailed, match="never pulled"):
        ArtifactStore(settings).pull_and_verify(f"{reg.address}/mlcloud/offline:other")
    with pytest.raises(PullFailed, match="unreachable"):
        ArtifactStore(settings, cache_dir=tmp_path / "empty-cache").pull_and_verify(result.pinned)


def test_unknown_tag_is_not_found(settings: Settings) -> None:
    with pytest.raises(ArtifactNotFound):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/nothing:0.0.1")


def test_layer_swapped_under_the_token_is_refused(
    component: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _build(component, settings)
    (component / "echo.py").write_text("import os\nos.system('rm -rf /')\n")
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(pack(component))
    push(dataclasses.replace(built, layer_path=evil), settings, "mlcloud/echo:swapped")
    calls = _requests(monkeypatch)
    with pytest.raises(HashMismatch, match="claims of echo name"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:swapped")
    assert not any("/blobs/" in path for _, path in calls)  # refused before the download
    assert _unpacked(settings) == []


def test_layer_corrupted_in_the_registry_is_refused(make_component: Callable[..., Path], settings: Settings,
                                                    registry: EmbeddedRegistry) -> None:
    built = _build(make_component("corrupt"), settings)
    push(built, settings)
    hexdigest = built.layer_digest.removeprefix("sha256:")
    data = registry.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    data.write_bytes(data.read_bytes()[:-8] + b"tampered")
    with pytest.raises(HashMismatch, match="refused"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/corrupt:0.1.0")
    assert _unpacked(settings) == []
    assert not (settings.state_dir / "oci-cache" / "blobs" / "sha256" / hexdigest).exists()


def test_tampered_token_is_refused(component: Path, settings: Settings) -> None:
    built = _build(component, settings)
    head, payload, sig = built.token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["wascap"]["caps"].append("wasmcloud:httpserver")
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    push(dataclasses.replace(built, token=f"{head}.{forged}.{sig}"), settings, "mlcloud/echo:forged")
    with pytest.raises(InvalidSignature):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:forged")
    assert _unpacked(settings) == []


def test_token_signed_by_an_untrusted_account_is_refused(component: Path, settings: Settings) -> None:
    built = _build(component, settings)
    stranger = KeyPair.generate(KeyKind.ACCOUNT)
    push(dataclasses.replace(built, token=_resign(built.token, stranger)), settings, "mlcloud/echo:stranger")
    ref = f"{settings.registry}/mlcloud/echo:stranger"
    other = KeyPair.generate(KeyKind.ACCOUNT).public_key
    trusting_us = settings.replace(trusted_issuers=f"{built.issuer_key}, {other}")
    with pytest.raises(UntrustedIssuer, match=stranger.public_key) as refused:
        ArtifactStore(trusting_us).pull_and_verify(ref)
    assert refused.value.details["issuer"] == stranger.public_key
    assert _unpacked(trusting_us) == []
    # With the stranger trusted too (the setting adds to the local account), the same artifact runs.
    both = settings.replace(trusted_issuers=stranger.public_key)
    assert ArtifactStore(both).pull_and_verify(ref).claims.issuer == stranger.public_key


def test_claims_that_disagree_with_the_component_are_refused(component: Path, settings: Settings) -> None:
    built = _build(component, settings)
    account = load_account(settings.keys_dir)
    more_caps = _resign(built.token, account, caps=("wasmcloud:mlinference", "wasmcloud:httpserver"))
    push(dataclasses.replace(built, token=more_caps), settings, "mlcloud/echo:morecaps")
    with pytest.raises(SubjectMismatch, match="capabilities"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:morecaps")

    provider_key = KeyPair.generate(KeyKind.PROVIDER).public_key
    push(dataclasses.replace(built, token=_resign(built.token, account, subject=provider_key)), settings,
         "mlcloud/echo:wrongkind")
    with pytest.raises(SubjectMismatch, match="provider key"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:wrongkind")

    push(built, settings, "mlcloud/echo:honest")
    other_actor = KeyPair.generate(KeyKind.ACTOR).public_key
    with pytest.raises(SubjectMismatch, match="expected"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:honest",
                                                expected_subject=other_actor)
    assert _unpacked(settings) == []


def test_signed_layer_with_path_traversal_is_not_unpacked(component: Path, settings: Settings, tmp_path: Path) -> None:
    built = _build(component, settings)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        entries = [("component.toml", (component / "component.toml").read_bytes()), ("../../escaped.txt", b"x")]
        for name, body in entries:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(raw.getvalue())
    account = load_account(settings.keys_dir)
    token = _resign(built.token, account, hash=hashlib.sha256(raw.getvalue()).hexdigest())
    push(dataclasses.replace(built, layer_path=evil, token=token), settings, "mlcloud/echo:traversal")
    with pytest.raises(UnsafeArchive, match="escapes"):
        ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/echo:traversal")
    assert _unpacked(settings) == []
    assert not list(settings.state_dir.rglob("escaped.txt"))


async def test_async_pull(component: Path, settings: Settings) -> None:
    result = push(_build(component, settings), settings, "mlcloud/echo:async")
    verified = await ArtifactStore(settings).pull_and_verify_async(f"{settings.registry}/mlcloud/echo:async")
    assert verified.digest == result.digest


def test_cli_build_push_keys(component: Path, settings: Settings) -> None:
    runner = CliRunner()
    env = {"MLCLOUD_STATE_DIR": str(settings.state_dir), "MLCLOUD_KEYS_DIR": str(settings.keys_dir),
           "MLCLOUD_REGISTRY": settings.registry}
    built = runner.invoke(build_command, [str(component)], env=env)
    assert built.exit_code == 0, built.output
    digest = next(line.split()[1] for line in built.output.splitlines() if line.strip().startswith("digest"))
    assert digest == _build(component, settings).layer_digest

    pushed = runner.invoke(push_command, [str(settings.state_dir / "build" / "echo-0.1.0")], env=env)
    assert pushed.exit_code == 0, pushed.output
    assert f"pushed {settings.registry}/mlcloud/echo:0.1.0" in pushed.output
    pinned = next(line.split()[1] for line in pushed.output.splitlines() if line.strip().startswith("pinned"))
    assert ArtifactStore(settings).pull_and_verify(pinned).manifest.name == "echo"

    keys = runner.invoke(keys_command, [], env=env)
    assert keys.exit_code == 0, keys.output
    assert "echo_module" in keys.output and "actor" in keys.output and "account" in keys.output

    refused = runner.invoke(push_command, [str(component), "--registry", f"127.0.0.1:{free_port()}"], env=env)
    assert refused.exit_code == 1 and "PushFailed" in refused.output


def test_push_if_changed_keeps_the_tag_when_the_code_is_the_same(make_component: Callable[..., Path],
                                                                  settings: Settings) -> None:
    folder = make_component("steady")
    first = push(_build(folder, settings), settings, if_changed=True)
    again = push(_build(folder, settings), settings, if_changed=True)  # new token, same code and keys
    assert first.pushed and not again.pushed and again.digest == first.digest
    (folder / "steady.py").write_text("component = 'changed'\n")
    changed = push(_build(folder, settings), settings, if_changed=True)
    assert changed.pushed and changed.digest != first.digest
    assert ArtifactStore(settings).pull_and_verify(f"{settings.registry}/mlcloud/steady:0.1.0").digest == changed.digest
