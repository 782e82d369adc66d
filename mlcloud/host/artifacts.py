"""Turning a component reference into something a host can run.

A reference is either a local component folder (development) or an OCI reference
(``localhost:5000/mlcloud/preprocess:0.1.0`` or ``…@sha256:…``) that is pulled with oras,
cached by digest and verified (signature, code hash, trusted issuer) before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlcloud.component import ComponentKind, ComponentManifest
from mlcloud.identity import load_or_create
from mlcloud.settings import Settings


@dataclass(frozen=True)
class ResolvedComponent:
    """A component ready to run: where its code is, who it is, what it may do."""

    ref: str
    folder: Path
    manifest: ComponentManifest
    key: str
    digest: str = ""
    issuer: str = ""
    capabilities: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> ComponentKind:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.manifest.name


def is_local_ref(ref: str) -> bool:
    return Path(ref).expanduser().is_dir()


async def resolve(ref: str, settings: Settings) -> ResolvedComponent:
    """Resolve ``ref`` to a runnable component; OCI artifacts are pulled and verified first."""
    if is_local_ref(ref):
        return resolve_local(Path(ref).expanduser().resolve(), settings)
    from mlcloud.oci import pull_and_verify_async  # imported lazily: oras pulls in requests

    artifact = await pull_and_verify_async(ref, settings)
    return ResolvedComponent(
        ref=ref,
        folder=artifact.path,
        manifest=artifact.manifest,
        key=artifact.claims.subject,
        digest=artifact.digest,
        issuer=artifact.claims.issuer,
        # The signed claims, not the folder's manifest, decide what the actor may call.
        capabilities=tuple(artifact.claims.caps),
    )


def resolve_local(folder: Path, settings: Settings) -> ResolvedComponent:
    """A folder run as is (development): its key is kept in the keys dir like a built one's."""
    manifest = ComponentManifest.load(folder)
    key = load_or_create(manifest.key_path(settings.keys_dir), manifest.kind.key_kind).public_key
    return ResolvedComponent(
        ref=str(folder), folder=folder, manifest=manifest, key=key, capabilities=manifest.capabilities
    )
