"""Building: a deterministic code layer, keys created on first use, a token naming the layer."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from mlcloud.identity import KeyKind, kind_of
from mlcloud.oci.build import BuiltArtifact, build
from mlcloud.oci.claims import verify_token
from mlcloud.oci.errors import BuildFailed
from mlcloud.oci.keys import account_key_path, list_keys

from .conftest import write_component


def test_digest_of_a_build_is_the_same_twice(component: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = build(component, keys, tmp_path / "out1")
    # A copy has other mtimes, inode order and permissions on the folders; the bytes must not care.
    copy = tmp_path / "copy" / "echo"
    shutil.copytree(component, copy)
    os.utime(copy / "echo.py", (1, 1))
    os.chmod(copy / "helpers", 0o700)
    second = build(copy, keys, tmp_path / "out2")
    assert first.layer_digest == second.layer_digest
    assert first.layer_path.read_bytes() == second.layer_path.read_bytes()
    assert first.layer_digest == "sha256:" + hashlib.sha256(first.layer_path.read_bytes()).hexdigest()


def test_layer_entries_are_sorted_normalised_and_skip_caches(component: Path, tmp_path: Path) -> None:
    built = build(component, tmp_path / "keys", tmp_path / "out")
    with tarfile.open(built.layer_path, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["component.toml", "echo.py", "helpers", "helpers/__init__.py", "helpers/util.py", "labels.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert {m.mode for m in members} <= {0o644, 0o755}
    assert built.layer_path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_code_change_changes_the_digest(component: Path, tmp_path: Path) -> None:
    before = build(component, tmp_path / "keys", tmp_path / "out1")
    (component / "helpers" / "util.py").write_text("def double(x):\n    return x + x\n")
    after = build(component, tmp_path / "keys", tmp_path / "out2")
    assert before.layer_digest != after.layer_digest


def test_keys_are_created_on_first_use_then_reused(component: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = build(component, keys, tmp_path / "out1")
    second = build(component, keys, tmp_path / "out2")
    assert first.subject_key == second.subject_key and first.issuer_key == second.issuer_key
    assert kind_of(first.subject_key) is KeyKind.ACTOR and kind_of(first.issuer_key) is KeyKind.ACCOUNT
    assert account_key_path(keys).stat().st_mode & 0o777 == 0o600
    listed = {k.name: (k.kind, k.public_key) for k in list_keys(keys)}
    assert listed["echo_module"] == ("actor", first.subject_key)
    assert listed[account_key_path(keys).stem] == ("account", first.issuer_key)


def test_token_names_the_layer_and_the_manifest(tmp_path: Path) -> None:
    folder = write_component(tmp_path / "mlinference", name="mlinference", kind="provider",
                             capabilities=(), contract="wasmcloud:mlinference")
    built = build(folder, tmp_path / "keys", tmp_path / "out")
    claims = verify_token(built.token)
    assert f"sha256:{claims.hash}" == built.layer_digest
    assert (claims.name, claims.version, claims.revision) == ("mlinference", "0.1.0", 3)
    assert claims.provider and claims.contract == "wasmcloud:mlinference" and claims.call_alias is None
    assert kind_of(claims.subject) is KeyKind.PROVIDER
    assert BuiltArtifact.load(built.folder) == built


def test_symlinks_are_not_packaged(component: Path, tmp_path: Path) -> None:
    (component / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(BuildFailed, match="symlink"):
        build(component, tmp_path / "keys", tmp_path / "out")


def test_output_inside_the_component_folder_is_not_packed(component: Path, tmp_path: Path) -> None:
    outside = build(component, tmp_path / "keys", tmp_path / "out")
    inside = build(component, tmp_path / "keys", component / "dist")
    assert inside.layer_digest == outside.layer_digest
