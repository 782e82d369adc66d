"""Package a component folder as a signed artifact on disk, ready to push.

``build(folder, keys_dir, out_dir)`` writes into ``out_dir``::

    <name>.tar.gz     the code layer: the folder as a deterministic tar.gz
    config.json       the component manifest (component.toml as JSON), the OCI config blob
    claims.jwt        the claims token naming the layer's sha256, signed by the issuer account
    artifact.json     what push needs: names, digests, sizes, media types

The layer is byte-for-byte reproducible: entries sorted, mtime 0, uid/gid 0, no user names,
modes normalised to 0644/0755, gzip header mtime 0 and no file name, caches (``__pycache__``,
``*.pyc``) and VCS folders left out. Same folder + same Python/zlib → same digest. The token is
not reproducible (``iat``, ``jti``), so a manifest digest changes on every build; the layer
digest is the one that names the code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from mlcloud.component import ComponentKind, ComponentManifest
from mlcloud.identity import KeyPair, load_or_create
from mlcloud.oci import claims as claims_mod
from mlcloud.oci.claims import Claims
from mlcloud.oci.errors import BuildFailed
from mlcloud.oci.keys import load_account
from mlcloud.oci.spec import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE

ARTIFACT_FILE = "artifact.json"
CONFIG_FILE = "config.json"
TOKEN_FILE = "claims.jwt"

_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_SKIP_FILES = {".DS_Store"}
# Level 9 and a fixed header keep the bytes stable; the layers are small, so speed hardly matters.
_GZIP_LEVEL = 9


@dataclass(frozen=True)
class BuiltArtifact:
    manifest: ComponentManifest
    folder: Path
    layer_path: Path
    config_path: Path
    token: str
    claims: Claims
    layer_digest: str
    layer_size: int

    @property
    def subject_key(self) -> str:
        return self.claims.subject

    @property
    def issuer_key(self) -> str:
        return self.claims.issuer

    @classmethod
    def load(cls, folder: Path) -> BuiltArtifact:
        """Read a build output folder back (what ``mlcloud push`` does with a built artifact)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / ARTIFACT_FILE).read_text())
            token = (folder / TOKEN_FILE).read_text().strip()
            manifest = ComponentManifest.from_dict(meta["component"], source=str(folder / ARTIFACT_FILE))
            layer_path = folder / meta["layer"]["file"]
            return cls(
                manifest=manifest,
                folder=folder,
                layer_path=layer_path,
                config_path=folder / CONFIG_FILE,
                token=token,
                claims=claims_mod.decode_unverified(token),
                layer_digest=meta["layer"]["digest"],
                layer_size=int(meta["layer"]["size"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BuildFailed(f"{folder} is not a built artifact ({exc})") from exc


def _skipped(path: Path) -> bool:
    if path.is_dir():
        return path.name in _SKIP_DIRS
    return path.name in _SKIP_FILES or path.name.endswith(_SKIP_SUFFIXES)


def _entries(root: Path, exclude: Path | None) -> list[Path]:
    """Every file and folder to pack, in a stable order (sorted by relative POSIX path)."""
    found: list[Path] = []

    def walk(folder: Path) -> None:
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            if exclude is not None and child.resolve() == exclude:
                continue
            if child.is_symlink():
                # A link may point anywhere on the builder's disk; the unpacker refuses them too.
                raise BuildFailed(f"{child}: symlinks are not packaged; copy the file instead")
            if _skipped(child):
                continue
            found.append(child)
            if child.is_dir():
                walk(child)

    walk(root)
    return found


def pack(folder: Path, exclude: Path | None = None) -> bytes:
    """The deterministic tar.gz of ``folder`` (see the module docstring)."""
    folder = Path(folder)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_GZIP_LEVEL) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _entries(folder, exclude.resolve() if exclude else None):
                info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                mode = path.stat().st_mode
                if path.is_dir():
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                elif path.is_file():
                    info.mode = 0o755 if mode & stat.S_IXUSR else 0o644
                    info.size = path.stat().st_size
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    raise BuildFailed(f"{path}: only regular files and folders are packaged")
    return raw.getvalue()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(
    component_folder: Path,
    keys_dir: Path,
    out_dir: Path,
    *,
    account: KeyPair | None = None,
    tags: tuple[str, ...] = (),
) -> BuiltArtifact:
    """Pack, hash and sign ``component_folder``; keys are created in ``keys_dir`` on first use."""
    folder = Path(component_folder)
    manifest = ComponentManifest.load(folder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    layer = pack(folder, exclude=out_dir)
    digest_hex = hashlib.sha256(layer).hexdigest()
    subject = load_or_create(manifest.key_path(Path(keys_dir)), manifest.kind.key_kind)
    if subject.kind is not manifest.kind.key_kind:
        raise BuildFailed(
            f"{manifest.key_path(Path(keys_dir))} holds a {subject.kind.name} key, "
            f"but {manifest.name} is a {manifest.kind}"
        )
    issuer = account or load_account(Path(keys_dir))
    is_provider = manifest.kind is ComponentKind.PROVIDER
    claims = Claims(
        issuer=issuer.public_key,
        subject=subject.public_key,
        name=manifest.name,
        version=manifest.version,
        revision=manifest.revision,
        hash=digest_hex,
        caps=manifest.capabilities,
        contract=manifest.contract,
        provider=is_provider,
        call_alias=None if is_provider else manifest.name,
        tags=tuple(tags),
    )
    token = claims_mod.sign(claims, issuer)

    layer_path = out_dir / f"{manifest.name}.tar.gz"
    config_path = out_dir / CONFIG_FILE
    _write(layer_path, layer)
    _write(config_path, json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    _write(out_dir / TOKEN_FILE, token.encode() + b"\n")
    meta = {
        "component": manifest.to_dict(),
        "layer": {
            "file": layer_path.name,
            "digest": f"sha256:{digest_hex}",
            "size": len(layer),
            "mediaType": LAYER_MEDIA_TYPE,
        },
        "config": {"file": CONFIG_FILE, "mediaType": CONFIG_MEDIA_TYPE},
        "subject": subject.public_key,
        "issuer": issuer.public_key,
    }
    _write(out_dir / ARTIFACT_FILE, json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")
    return BuiltArtifact(
        manifest=manifest,
        folder=out_dir,
        layer_path=layer_path,
        config_path=config_path,
        token=token,
        claims=claims,
        layer_digest=f"sha256:{digest_hex}",
        layer_size=len(layer),
    )
