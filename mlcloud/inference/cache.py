"""The mlinference provider's disk cache of Bindle parcels, addressed and verified by sha256.

A parcel is stored as ``<root>/<sha256>``. Bytes arrive from an async byte-stream source (the
Bindle client's parcel download), are hashed while written to a temporary file in the same
directory, and are renamed into place only when the digest matches: a reader never sees a partial
or wrong file, and two providers filling the same cache at once both end with the right file
(``os.replace`` is atomic, last writer wins with identical bytes). A present file is re-hashed
before reuse (milliseconds for a model, against the seconds a bad model would cost), and replaced
when it does not match.

The source is a callable that opens the stream, so nothing is downloaded when the cache hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterable, Callable
from pathlib import Path

from mlcloud.bindle.errors import BindleInvalidRequest, ParcelCorrupt
from mlcloud.digests import sha256_file

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")

ByteSource = Callable[[], AsyncIterable[bytes]] | AsyncIterable[bytes]


class ParcelCache:
    """Parcels on disk under ``root``; ``fetch`` returns the path of a verified file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha256: str) -> Path:
        return self.root / _checked(sha256)

    async def fetch(self, sha256: str, source: ByteSource, *, size: int | None = None) -> Path:
        """The cached file for ``sha256``, downloading it from ``source`` when absent or bad.

        Raises ParcelCorrupt when the bytes do not hash to ``sha256`` (or have the wrong size),
        without leaving anything behind.
        """
        digest = _checked(sha256)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:  # one download per parcel per process; waiters then hit the cache
            path = self.root / digest
            if path.exists():
                if await asyncio.to_thread(sha256_file, path) == digest:
                    return path
                log.warning("cached parcel %s is corrupt; fetching it again", digest)
                path.unlink(missing_ok=True)
            return await self._download(digest, source, size)

    async def _download(self, digest: str, source: ByteSource, size: int | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        stream = source() if callable(source) else source
        fd, temp_name = tempfile.mkstemp(dir=self.root, prefix=f".{digest[:16]}-", suffix=".part")
        temp = Path(temp_name)
        try:
            hasher = hashlib.sha256()
            written = 0
            # aclosing: a stream abandoned half-way (bad bytes, disk full) still closes its HTTP
            # response now, not whenever the async generator is collected.
            closing = (
                contextlib.aclosing(stream)  # type: ignore[type-var]
                if hasattr(stream, "aclose")
                else contextlib.nullcontext(stream)
            )
            async with closing:
                with os.fdopen(fd, "wb") as file:
                    async for chunk in stream:
                        # Hashing and writing a chunk takes well under a millisecond; doing it
                        # inline keeps the event loop free of per-chunk thread hand-offs.
                        hasher.update(chunk)
                        file.write(chunk)
                        written += len(chunk)
                    file.flush()
                    os.fsync(file.fileno())
            got = hasher.hexdigest()
            if got != digest:
                raise ParcelCorrupt(
                    f"parcel {digest} arrived with sha256 {got} ({written} bytes); refused",
                    expected=digest,
                    actual=got,
                )
            if size is not None and written != size:
                raise ParcelCorrupt(
                    f"parcel {digest} arrived with {written} bytes, the invoice says {size}",
                    expected=digest,
                    actual=got,
                )
            path = self.root / digest
            os.replace(temp, path)
            return path
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def _checked(sha256: str) -> str:
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        # Also keeps a hostile invoice from naming a path outside the cache.
        raise BindleInvalidRequest(f"{sha256!r} is not a sha256 hex digest")
    return digest
