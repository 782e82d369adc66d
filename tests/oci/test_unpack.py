"""Unpacking a layer is as safe without tar extraction filters (Python 3.11.0–3.11.3) as with them.

Each test runs twice: once through ``filter="data"`` where this Python has it, once through the
fallback that stock Debian 12's Python 3.11.2 takes (forced here by hiding the filters).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mlcloud.oci import verify
from mlcloud.oci.errors import UnsafeArchive


@pytest.fixture(params=["data-filter", "fallback"])
def extraction(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "data-filter":
        if not verify.HAS_EXTRACTION_FILTERS:
            pytest.skip("this Python has no tar extraction filters (before 3.11.4)")
    else:
        monkeypatch.setattr(verify, "HAS_EXTRACTION_FILTERS", False)
    return str(request.param)


def _layer(tmp_path: Path, *entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "layer.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            info, body = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body else None)
    return path


def _entry(name: str, *, type_: bytes = tarfile.REGTYPE, mode: int = 0o644, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def test_files_and_folders_are_unpacked_with_safe_modes_and_the_unpacking_users_ids(
    extraction: str, tmp_path: Path
) -> None:
    layer = _layer(
        tmp_path,
        _entry("pkg", type_=tarfile.DIRTYPE, mode=0o777),
        (_entry("pkg/run.py", mode=0o6777, uid=4321, gid=4321, uname="mallory", gname="mallory"), b"print(1)\n"),
        (_entry("pkg/data.bin", mode=0o666), b"\x00\x01"),
        (_entry("pkg/private", mode=0o000), b"secret"),
    )
    dest = tmp_path / "out"
    verify.unpack(layer, dest, "test")

    def mode(path: str) -> int:
        return stat.S_IMODE((dest / path).stat().st_mode)

    assert (dest / "pkg" / "run.py").read_bytes() == b"print(1)\n"
    assert mode("pkg/run.py") == 0o755  # no setuid, setgid, sticky, nor group/other write
    assert mode("pkg/data.bin") == 0o644
    assert mode("pkg/private") == 0o600  # still readable by the owner
    assert not mode("pkg") & 0o022
    owner = (dest / "pkg" / "run.py").stat()
    assert (owner.st_uid, owner.st_gid) == (os.getuid(), os.getgid())


BAD_ENTRIES: dict[str, Callable[[], tarfile.TarInfo]] = {
    "absolute path": lambda: _entry("/etc/evil"),
    "parent folder": lambda: _entry("pkg/../../evil"),
    "symlink out": lambda: _entry("pkg/link", type_=tarfile.SYMTYPE, linkname="/etc/passwd"),
    "symlink in": lambda: _entry("pkg/link", type_=tarfile.SYMTYPE, linkname="run.py"),
    "hard link": lambda: _entry("pkg/hard", type_=tarfile.LNKTYPE, linkname="/etc/passwd"),
    "character device": lambda: _entry("pkg/tty", type_=tarfile.CHRTYPE, devmajor=5, devminor=0),
    "block device": lambda: _entry("pkg/sda", type_=tarfile.BLKTYPE, devmajor=8, devminor=0),
    "fifo": lambda: _entry("pkg/pipe", type_=tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("bad", sorted(BAD_ENTRIES))
def test_unsafe_entries_are_refused_and_nothing_is_written(extraction: str, tmp_path: Path, bad: str) -> None:
    layer = _layer(tmp_path, (_entry("pkg/run.py"), b"print(1)\n"), BAD_ENTRIES[bad]())
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive):
        verify.unpack(layer, dest, "test")
    assert list(dest.rglob("*")) == []
    assert not (tmp_path / "evil").exists()
