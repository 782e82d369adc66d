"""Turning a component reference into something a host can run.

A reference is either a local component folder (development) or an OCI reference
(``localhost:5000/mlcloud/preprocess:0.1.0`` or ``…@sha256:…``) that is pulled with oras,
cached by digest and verified (signature, code hash, trusted issuer: :mod:`mlcloud.trust`) before
anything runs. A local folder is unsigned: a host runs one only when started with the development
flag (``Settings.dev``), and refuses it with :class:`UnsignedComponent` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlcloud.component import ComponentKind, ComponentManifest
from mlcloud.errors import ClaimsError
from mlcloud.identity import load_or_create
from mlcloud.settings import Settings


class UnsignedComponent(ClaimsError):
    """A local component folder, which no one signed, asked of a host not in development mode."""


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


async def resolve(ref: str, settings: Settings, *, allow_unsigned: bool) -> ResolvedComponent:
    """Resolve ``ref`` to a runnable component; OCI artifacts are pulled and verified first.

    A local folder resolves only with ``allow_unsigned``: a host passes its development flag, a
    deployer that only learns a component's key (the host decides whether it runs) passes True.
    """
    if is_local_ref(ref):
        if not allow_unsigned:
            raise UnsignedComponent(
                f"{ref} is a local folder, which is not signed: a host runs one only when started with the "
                "development flag (`mlcloud up --dev`, `mlcloud host --dev`, MLCLOUD_DEV=1); otherwise "
                "build, push and start the signed artifact (`mlcloud build`, `mlcloud push`)"
            )
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
