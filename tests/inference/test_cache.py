"""The sha256-addressed parcel cache: atomic, verified, reused, and refusing wrong bytes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mlcloud.bindle.errors import BindleInvalidRequest, ParcelCorrupt
from mlcloud.inference.cache import ParcelCache

DATA = b"model bytes " * 10_000
SHA = hashlib.sha256(DATA).hexdigest()


class Source:
    def __init__(self, data: bytes = DATA, delay: float = 0) -> None:
        self.data, self.delay, self.opened = data, delay, 0

    def __call__(self) -> AsyncIterator[bytes]:
        self.opened += 1
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 4096):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield self.data[i : i + 4096]


async def test_stores_verifies_and_reuses(tmp_path: Path) -> None:
    cache = ParcelCache(tmp_path / "parcels")
    source = Source()
    path = await cache.fetch(SHA, source, size=len(DATA))
    assert path == cache.path_for(SHA) and path.read_bytes() == DATA
    assert await cache.fetch(SHA, source) == path
    assert source.opened == 1  # the hit never opened the stream
    assert [p.name for p in path.parent.iterdir()] == [SHA]  # no temporary files left


async def test_sha256_mismatch_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    cache = ParcelCache(tmp_path)
    with pytest.raises(ParcelCorrupt, match="refused"):
        await cache.fetch(SHA, Source(DATA + b"tampered"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ParcelCorrupt, match="bytes"):
        await cache.fetch(SHA, Source(), size=len(DATA) + 1)
    assert list(tmp_path.iterdir()) == []


async def test_corrupt_cached_file_is_fetched_again(tmp_path: Path) -> None:
    cache = ParcelCache(tmp_path)
    cache.path_for(SHA).write_bytes(b"bit rot")
    source = Source()
    path = await cache.fetch(SHA, source)
    assert source.opened == 1 and path.read_bytes() == DATA


async def test_concurrent_fetches_download_once(tmp_path: Path) -> None:
    cache = ParcelCache(tmp_path)
    source = Source(delay=0.001)
    paths = await asyncio.gather(*(cache.fetch(SHA, source) for _ in range(5)))
    assert len(set(paths)) == 1 and source.opened == 1


async def test_a_digest_that_is_not_hex_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BindleInvalidRequest):
        await ParcelCache(tmp_path).fetch("../../etc/passwd", Source())
