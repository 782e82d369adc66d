"""Signed OCI artifacts for actors and providers: build, push, pull, verify (issue 5).

    build(folder, keys_dir, out_dir)            -> BuiltArtifact     (build.py)
    push(artifact, settings, ref=None)          -> PushResult        (push.py)
    ArtifactStore(settings).pull_and_verify(ref) -> VerifiedArtifact  (pull.py; also *_async)
    EmbeddedRegistry(root, address)                                  (registry.py)
    sign / verify_token / Claims                                     (claims.py)

Artifact layout and reference syntax: spec.py. Errors: errors.py. CLI commands: cli.py.
"""

from mlcloud.oci.build import BuiltArtifact, build, pack
from mlcloud.oci.claims import Claims, decode_unverified, sign, verify_token
from mlcloud.oci.errors import (
    ArtifactNotFound,
    BuildFailed,
    HashMismatch,
    InvalidReference,
    InvalidSignature,
    MalformedToken,
    PullFailed,
    PushFailed,
    RegistryNotInstalled,
    RegistryStartFailed,
    SubjectMismatch,
    TokenExpired,
    UnsafeArchive,
    UntrustedIssuer,
)
from mlcloud.oci.keys import account_key_path, list_keys, load_account
from mlcloud.oci.pull import ArtifactStore, VerifiedArtifact, pull_and_verify, pull_and_verify_async
from mlcloud.oci.push import PushResult, default_reference, push
from mlcloud.oci.registry import EmbeddedRegistry, RegistryState, find_registry_binary
from mlcloud.oci.spec import Reference

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "BuildFailed",
    "BuiltArtifact",
    "Claims",
    "EmbeddedRegistry",
    "HashMismatch",
    "InvalidReference",
    "InvalidSignature",
    "MalformedToken",
    "PullFailed",
    "PushFailed",
    "PushResult",
    "Reference",
    "RegistryNotInstalled",
    "RegistryStartFailed",
    "RegistryState",
    "SubjectMismatch",
    "TokenExpired",
    "UnsafeArchive",
    "UntrustedIssuer",
    "VerifiedArtifact",
    "account_key_path",
    "build",
    "decode_unverified",
    "default_reference",
    "find_registry_binary",
    "list_keys",
    "load_account",
    "pack",
    "pull_and_verify",
    "pull_and_verify_async",
    "push",
    "sign",
    "verify_token",
]
