"""Pull an artifact, keep it in a digest-addressed cache, verify it, hand back a code folder.

Cache (``<state_dir>/oci-cache``)::

    blobs/sha256/<hex>        manifests and code layers, stored only after their hash checked
    tags.json                 "registry/repo:tag" -> manifest digest, for starting offline
    unpacked/<hex>/           verified code folders, one per manifest digest

A pull by tag asks the registry which digest the tag names now (a HEAD, no body) and downloads
only what the cache lacks; a pull by digest that is cached makes no request at all. When the
registry cannot be reached, a tag that was pulled (and verified) before resolves through
``tags.json``. Every pull, cached or not, runs the whole verification of :mod:`mlcloud.oci.verify`
again, since the trusted issuers (:func:`mlcloud.trust.trusted_issuers`, read at each pull) may have
changed since the folder was made.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlcloud import trust
from mlcloud.component import ComponentManifest
from mlcloud.oci import verify
from mlcloud.oci.claims import Claims
from mlcloud.oci.client import RegistryClient, fetch_blob, fetch_manifest, resolve_digest
from mlcloud.oci.errors import ArtifactNotFound, PullFailed
from mlcloud.oci.spec import Reference
from mlcloud.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedArtifact:
    """A component whose signature, hash and claims verified, unpacked in ``path``."""

    path: Path
    claims: Claims
    digest: str  # manifest digest: pin with f"{reference.registry}/{reference.repository}@{digest}"
    manifest: ComponentManifest
    reference: Reference

    @property
    def subject_key(self) -> str:
        return self.claims.subject


class OciCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.unpacked = self.root / "unpacked"
        self.tags_path = self.root / "tags.json"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def folder(self, digest: str) -> Path:
        return self.unpacked / digest.removeprefix("sha256:")

    def ensure(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.unpacked.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Hosts on one machine share the cache; the tag index is read-modify-write.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read_tags(self) -> dict[str, str]:
        try:
            data = json.loads(self.tags_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def tag_digest(self, ref: Reference) -> str | None:
        return self._read_tags().get(ref.tag_key)

    def remember_tag(self, ref: Reference, digest: str) -> None:
        with self._locked():
            tags = self._read_tags()
            if tags.get(ref.tag_key) == digest:
                return
            tags[ref.tag_key] = digest
            tmp = self.tags_path.with_name(f".tags.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(tags, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.tags_path)


class ArtifactStore:
    """Pulls and verifies artifacts for one host (settings give registry, trust and cache)."""

    def __init__(self, settings: Settings, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.cache = OciCache(cache_dir or settings.state_dir / "oci-cache")
        self._clients: dict[str, RegistryClient] = {}

    def _client(self, registry: str) -> RegistryClient:
        if registry not in self._clients:
            self._clients[registry] = RegistryClient(registry, insecure=self.settings.registry_insecure)
        return self._clients[registry]

    def _resolve(self, ref: Reference) -> str:
        if ref.digest:
            return ref.digest
        try:
            return resolve_digest(self._client(ref.registry), ref)
        except ArtifactNotFound:
            raise
        except PullFailed as exc:
            cached = self.cache.tag_digest(ref)
            if cached is None:
                raise PullFailed(f"{exc}; and {ref} was never pulled here, so there is no cached copy") from exc
            log.warning("registry %s unreachable; starting %s from the cache (%s)", ref.registry, ref, cached)
            return cached

    def _blob(self, ref: Reference, digest: str) -> Path:
        path = self.cache.blob_path(digest)
        if not path.exists():
            fetch_blob(self._client(ref.registry), ref.with_digest(digest), digest, path)
        return path

    def _manifest(self, ref: Reference, digest: str) -> bytes:
        path = self.cache.blob_path(digest)
        if path.exists():
            return path.read_bytes()
        raw, _ = fetch_manifest(self._client(ref.registry), ref.with_digest(digest))
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
        return raw

    def pull_and_verify(self, reference: str | Reference, expected_subject: str | None = None) -> VerifiedArtifact:
        """Pull ``reference`` (tag or digest), verify it, and return its unpacked folder.

        Raises a ClaimsError subclass when verification fails (nothing is unpacked then),
        PullFailed/ArtifactNotFound when it cannot be fetched and is not cached.
        """
        ref = reference if isinstance(reference, Reference) else Reference.parse(reference, self.settings.registry)
        self.cache.ensure()
        digest = self._resolve(ref)
        label = str(ref)
        _, layer, token = verify.parse_manifest(self._manifest(ref, digest), label)
        claims = verify.verify_claims(token, label, trust.trusted_issuers(self.settings))
        verify.check_layer_descriptor(claims, layer, label)
        layer_path = self._blob(ref, layer["digest"])
        # Re-hashed even when cached: the cache is only a directory other processes can write.
        verify.check_layer_bytes(claims, layer_path, label)
        manifest = verify.read_layer_manifest(layer_path, label)
        verify.check_subject(claims, manifest, label, expected_subject)

        folder = self.cache.folder(digest)
        if not folder.is_dir():
            staging = self.cache.unpacked / f".{folder.name}.{uuid.uuid4().hex}"
            try:
                verify.unpack(layer_path, staging, label)
                # The rename is atomic: a host sees no folder or a complete, verified one.
                os.rename(staging, folder)
            except OSError:
                if not folder.is_dir():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if ref.tag:
            self.cache.remember_tag(ref, digest)
        return VerifiedArtifact(folder, claims, digest, manifest, ref.with_digest(digest))

    async def pull_and_verify_async(
        self, reference: str | Reference, expected_subject: str | None = None
    ) -> VerifiedArtifact:
        """:meth:`pull_and_verify` in a worker thread (oras and requests are blocking)."""
        return await asyncio.to_thread(self.pull_and_verify, reference, expected_subject)


def pull_and_verify(
    reference: str, settings: Settings | None = None, expected_subject: str | None = None
) -> VerifiedArtifact:
    return ArtifactStore(settings or Settings.from_env()).pull_and_verify(reference, expected_subject)


async def pull_and_verify_async(
    reference: str, settings: Settings | None = None, expected_subject: str | None = None
) -> VerifiedArtifact:
    return await ArtifactStore(settings or Settings.from_env()).pull_and_verify_async(reference, expected_subject)
