"""Push a built artifact to an OCI registry with oras (layout: see :mod:`mlcloud.oci.spec`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from mlcloud.errors import MLCloudError
from mlcloud.oci.build import BuiltArtifact
from mlcloud.oci.claims import decode_unverified
from mlcloud.oci.client import RegistryClient, fetch_manifest
from mlcloud.oci.errors import ArtifactNotFound, PushFailed
from mlcloud.oci.spec import (
    CLAIMS_ANNOTATION,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    TITLE_ANNOTATION,
    VERSION_ANNOTATION,
    Reference,
)
from mlcloud.settings import Settings

REPOSITORY_PREFIX = "mlcloud"


def default_reference(artifact: BuiltArtifact, registry: str) -> Reference:
    """``<registry>/mlcloud/<name>:<version>``, the name the app manifests use."""
    return Reference(registry, f"{REPOSITORY_PREFIX}/{artifact.manifest.name}", artifact.manifest.version)


@dataclass(frozen=True)
class PushResult:
    reference: Reference  # with the tag and the manifest digest
    digest: str
    pushed: bool = True  # False when if_changed found the same code already there

    @property
    def pinned(self) -> str:
        """The digest reference: what a host should be given to run exactly this build."""
        return str(Reference(self.reference.registry, self.reference.repository, None, self.digest))


def _published(client: RegistryClient, ref: Reference, artifact: BuiltArtifact) -> PushResult | None:
    """The tag's current manifest when it already carries this code from the same keys."""
    try:
        raw, digest = fetch_manifest(client, ref)
        manifest = json.loads(raw)
        [layer] = [d for d in manifest["layers"] if d.get("mediaType") == LAYER_MEDIA_TYPE]
        claims = decode_unverified(manifest["annotations"][CLAIMS_ANNOTATION])
    except ArtifactNotFound:
        return None
    except (MLCloudError, ValueError, KeyError, TypeError):
        # Unreadable or foreign: pushing over it is the fix. Only deciding to skip needs care,
        # and hosts verify whatever they pull anyway.
        return None
    same = (
        layer.get("digest") == artifact.layer_digest
        and claims.issuer == artifact.issuer_key
        and claims.subject == artifact.subject_key
        and claims.revision == artifact.manifest.revision
    )
    return PushResult(ref.with_digest(digest), digest, pushed=False) if same else None


def push(
    artifact: BuiltArtifact,
    settings: Settings,
    reference: str | Reference | None = None,
    *,
    registry: str | None = None,
    if_changed: bool = False,
) -> PushResult:
    """Upload layer, config and manifest (blobs the registry has are skipped by oras).

    With ``if_changed``, a tag that already names this code layer, signed for the same subject
    by the same issuer, is left as it is (its digest is returned): a fresh token alone would
    otherwise make a new manifest digest on every ``make run``.
    """
    target_registry = registry or settings.registry
    if reference is None:
        ref = default_reference(artifact, target_registry)
    elif isinstance(reference, Reference):
        ref = reference
    else:
        ref = Reference.parse(reference, target_registry)
    if ref.digest or not ref.tag:
        raise PushFailed(f"push to a tag, not a digest: {ref}")
    client = RegistryClient(ref.registry, insecure=settings.registry_insecure)
    if if_changed:
        existing = _published(client, ref, artifact)
        if existing is not None:
            return existing
    try:
        response = client.push(
            target=str(ref),
            files=[f"{artifact.layer_path}:{LAYER_MEDIA_TYPE}"],
            manifest_config=f"{artifact.config_path}:{CONFIG_MEDIA_TYPE}",
            manifest_annotations={
                CLAIMS_ANNOTATION: artifact.token,
                TITLE_ANNOTATION: artifact.manifest.name,
                VERSION_ANNOTATION: artifact.manifest.version,
            },
            # Build outputs live in the state dir, not under the current directory.
            disable_path_validation=True,
            quiet=True,
        )
    except (requests.RequestException, ValueError, OSError) as exc:
        raise PushFailed(f"push of {artifact.manifest.name} to {ref} failed: {exc}") from exc
    digest = response.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        raise PushFailed(f"{ref.registry} accepted {ref} but sent no manifest digest")
    return PushResult(ref.with_digest(digest), digest)
