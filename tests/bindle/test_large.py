"""A 200 MB parcel streams through the server without the server holding it in memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from pathlib import Path

import psutil

from mlcloud.bindle import AsyncClient, BindleSpec, Invoice, Label, Parcel
from mlcloud.testing.bindle import BindleServerProcess

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
# The server may buffer a few chunks; growing by a quarter of the parcel would mean it is not
# streaming.
MAX_GROWTH = SIZE // 4


def _write_big_file(path: Path) -> str:
    """200 distinct 1 MiB chunks, hashed as they are written; never all in memory."""
    block = bytearray(os.urandom(CHUNK))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(SIZE // CHUNK):
            block[:8] = i.to_bytes(8, "little")
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


class PeakRss:
    """Samples a process's resident memory in the background; ``growth`` is peak − start."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample(), name="rss-sampler")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


async def test_200mb_parcel_streams_without_server_memory_growing(
    fresh_server: BindleServerProcess, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    sha = await asyncio.to_thread(_write_big_file, source)
    invoice = Invoice(bindle_version="1.0.0", bindle=BindleSpec(name="big/model", version="1.0.0"),
                      parcel=[Parcel(label=Label(sha256=sha, name="big.bin", size=SIZE))])
    async with AsyncClient(fresh_server.url, timeout=120) as client:
        await client.create_invoice(invoice)

        started = time.monotonic()
        async with PeakRss(fresh_server.pid) as upload_rss:
            await client.create_parcel(invoice.id, sha, source)
        upload_seconds = time.monotonic() - started
        assert upload_rss.growth < MAX_GROWTH, f"upload grew server RSS by {upload_rss.growth}"
        stored = fresh_server.directory / "parcels" / sha / "parcel.dat"
        assert stored.stat().st_size == SIZE

        dest = tmp_path / "back.bin"
        async with PeakRss(fresh_server.pid) as download_rss:
            await client.download_parcel(invoice.id, sha, dest)  # raises unless the sha matches
        assert download_rss.growth < MAX_GROWTH, f"download grew RSS by {download_rss.growth}"
        assert dest.stat().st_size == SIZE
    # Streaming should also be fast; this is generous for slow CI disks.
    assert upload_seconds < 30
