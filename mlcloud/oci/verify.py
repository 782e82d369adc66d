"""The checks an artifact must pass before anything of it is unpacked where a host runs code.

In order (cheapest first, and before the layer is even downloaded where possible):

1. the manifest carries a claims token whose JWT signature verifies with its issuer (claims.py);
2. the issuer is one of the trusted accounts (:func:`mlcloud.trust.trusted_issuers`: none trusted
   refuses every artifact);
3. the manifest's code layer is the one the claims name (descriptor digest == claims hash),
   and the layer's bytes hash to it;
4. the layer is a safe archive: only regular files and folders, relative paths, no ``..``
   (and it is unpacked as safely on Python 3.11.0–3.11.3, which lack tar extraction filters, as
   the ``data`` filter unpacks it on 3.11.4 and later: see :func:`unpack`);
5. the ``component.toml`` inside the layer agrees with the claims (name, version, revision,
   capabilities, contract, actor/provider) and the subject key is of the right kind
   (M… for actors, V… for providers), and is the expected key when the caller names one.

Each failure raises its own ClaimsError subclass (see mlcloud.oci.errors).
"""

from __future__ import annotations

import copy
import json
import os
import tarfile
import tomllib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from mlcloud.component import MANIFEST_NAME, ComponentKind, ComponentManifest
from mlcloud.digests import sha256_file
from mlcloud.errors import ConfigError
from mlcloud.identity import kind_of
from mlcloud.oci.claims import Claims, verify_token
from mlcloud.oci.errors import HashMismatch, MalformedToken, SubjectMismatch, UnsafeArchive, UntrustedIssuer
from mlcloud.oci.spec import CLAIMS_ANNOTATION, LAYER_MEDIA_TYPE

# Components are small Python folders; anything near this is a mistake or a gzip bomb.
MAX_UNPACKED_BYTES = 1 << 30


def parse_manifest(raw: bytes, ref: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(manifest, code layer descriptor, claims token) of an OCI manifest, or MalformedToken."""
    try:
        manifest = json.loads(raw)
        layers = [d for d in manifest.get("layers", []) if d.get("mediaType") == LAYER_MEDIA_TYPE]
    except (ValueError, AttributeError, TypeError) as exc:
        raise MalformedToken(f"{ref}: manifest is not OCI JSON ({exc})") from exc
    if len(layers) != 1:
        raise MalformedToken(f"{ref}: expected one {LAYER_MEDIA_TYPE} layer, found {len(layers)}")
    token = (manifest.get("annotations") or {}).get(CLAIMS_ANNOTATION)
    if not token:
        raise MalformedToken(f"{ref}: the manifest carries no claims token ({CLAIMS_ANNOTATION})")
    return manifest, layers[0], str(token)


def verify_claims(token: str, ref: str, trusted_issuers: Iterable[str]) -> Claims:
    """Signature, validity window and the issuer's trust (an empty ``trusted_issuers`` trusts no one)."""
    claims = verify_token(token)
    if claims.issuer not in frozenset(trusted_issuers):
        raise UntrustedIssuer(
            f"{ref}: {claims.name} is signed by account {claims.issuer}, which this host does not trust; "
            f"`mlcloud trust add {claims.issuer}` trusts it",
            issuer=claims.issuer,
        )
    return claims


def check_layer_descriptor(claims: Claims, layer: dict[str, Any], ref: str) -> None:
    if layer.get("digest") != f"sha256:{claims.hash}":
        raise HashMismatch(
            f"{ref}: the code layer is {layer.get('digest')}, but the claims of {claims.name} "
            f"name sha256:{claims.hash}; refused"
        )


def check_layer_bytes(claims: Claims, path: Path, ref: str) -> None:
    digest = sha256_file(path)
    if digest != claims.hash:
        raise HashMismatch(
            f"{ref}: the code layer hashes to sha256:{digest}, but the claims of "
            f"{claims.name} name sha256:{claims.hash}; refused"
        )


def _checked_members(tar: tarfile.TarFile, ref: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    total = 0
    for m in members:
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts or "\\" in m.name or not m.name.strip("./"):
            raise UnsafeArchive(f"{ref}: layer entry {m.name!r} escapes the artifact folder")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchive(f"{ref}: layer entry {m.name!r} is not a regular file or folder")
        total += m.size
        if total > MAX_UNPACKED_BYTES:
            raise UnsafeArchive(f"{ref}: layer unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    return members


def read_layer_manifest(layer_path: Path, ref: str) -> ComponentManifest:
    """The component.toml inside the layer, after checking every entry is safe to unpack."""
    try:
        with tarfile.open(layer_path, "r:gz") as tar:
            _checked_members(tar, ref)
            member = tar.extractfile(MANIFEST_NAME)
            if member is None:
                raise UnsafeArchive(f"{ref}: {MANIFEST_NAME} in the layer is not a file")
            data = tomllib.loads(member.read().decode())["component"]
    except KeyError as exc:
        raise SubjectMismatch(f"{ref}: the layer has no {MANIFEST_NAME} [component] table") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnsafeArchive(f"{ref}: the code layer is not a readable tar.gz ({exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SubjectMismatch(f"{ref}: the layer's {MANIFEST_NAME} is invalid ({exc})") from exc
    try:
        return ComponentManifest.from_dict(data, source=f"{ref}:{MANIFEST_NAME}")
    except ConfigError as exc:
        raise SubjectMismatch(str(exc)) from exc


def check_subject(
    claims: Claims, manifest: ComponentManifest, ref: str, expected_subject: str | None = None
) -> None:
    """The claims describe this component: same identity, same declared capabilities."""
    if kind_of(claims.subject) is not manifest.kind.key_kind:
        raise SubjectMismatch(
            f"{ref}: {manifest.name} is a {manifest.kind}, but the claims subject {claims.subject} "
            f"is a {kind_of(claims.subject).name.lower()} key"
        )
    if expected_subject and claims.subject != expected_subject:
        raise SubjectMismatch(f"{ref}: subject is {claims.subject}, expected {expected_subject}")
    declared = {
        "name": (claims.name, manifest.name),
        "version": (claims.version, manifest.version),
        "revision": (claims.revision, manifest.revision),
        "capabilities": (sorted(claims.caps), sorted(manifest.capabilities)),
        "contract": (claims.contract, manifest.contract),
        "provider": (claims.provider, manifest.kind is ComponentKind.PROVIDER),
    }
    wrong = [f"{k} {c!r} != {m!r}" for k, (c, m) in declared.items() if c != m]
    if wrong:
        raise SubjectMismatch(f"{ref}: claims disagree with the layer's {MANIFEST_NAME}: " + "; ".join(wrong))


def unpack(layer_path: Path, dest: Path, ref: str) -> None:
    """Extract a layer already checked by :func:`read_layer_manifest` into the new folder ``dest``."""
    dest.mkdir(parents=True)
    with tarfile.open(layer_path, "r:gz") as tar:
        members = _checked_members(tar, ref)
        if HAS_EXTRACTION_FILTERS:
            # The "data" filter is a second guard (and drops setuid bits and odd modes).
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=_data_filtered(members, dest, ref))


# Tar extraction filters (PEP 706) arrived in Python 3.11.4; Debian 12 ships 3.11.2.
HAS_EXTRACTION_FILTERS = hasattr(tarfile, "data_filter")


def _data_filtered(members: list[tarfile.TarInfo], dest: Path, ref: str) -> list[tarfile.TarInfo]:
    """Copies of ``members`` changed as the ``data`` filter changes them, for Pythons without it.

    :func:`_checked_members` has already refused links, devices, absolute and ``..`` paths; this
    adds the rest of what the filter does: each target resolves inside ``dest`` (even through a
    folder created earlier), files keep no setuid/setgid/sticky bits nor group or other write
    permission and stay readable and writable by their owner, folders keep the default mode, and
    nothing is chowned to the archive's owner when unpacking as root.
    """
    root = os.path.realpath(dest)
    filtered = []
    for member in members:
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.commonpath([root, target]) != root:
            raise UnsafeArchive(f"{ref}: layer entry {member.name!r} resolves outside the artifact folder")
        safe = copy.copy(member)
        if member.isdir():
            safe.mode = 0o755
        else:
            mode = member.mode & 0o755
            safe.mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
        safe.uid = safe.gid = -1  # os.chown(path, -1, -1) keeps the unpacking user's ids
        safe.uname = safe.gname = ""
        filtered.append(safe)
    return filtered
