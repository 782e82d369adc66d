"""Closed-loop load: ``concurrency`` workers, each sending its next request when the last answered.

Two drivers share one shape (warm-up, then a fixed number of timed requests, progress on
stderr): :func:`http_load` for the servers, :func:`inprocess_load` for the limit (a plain loop at
concurrency 1, a thread pool above).

The HTTP client is a minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per
worker: on a 2-core machine the load generator competes with the system under test for the same
cores, so it must cost as little CPU per request as possible, and it costs the same for every
server measured.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class LoadError(RuntimeError):
    """A request failed in a way that makes the measurement meaningless."""


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, timed requests only
    errors: int = 0
    elapsed: float = 0.0  # wall time of the timed requests
    statuses: dict[int, int] = field(default_factory=dict)
    window_requests: int = 0  # answers within the steady-state window (see steady_window)
    window_seconds: float = 0.0

    @property
    def throughput(self) -> float:
        if self.window_seconds > 0:
            return self.window_requests / self.window_seconds
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def steady_window(self, completions: list[float], warmup: int, concurrency: int) -> None:
        """Throughput over the answers that arrived while every worker was busy.

        ``completions`` are the answer times of all requests, warm-up included, in order. The
        window opens at the last warm-up answer and closes when the drain begins (the last
        ``concurrency`` answers arrive with fewer and fewer requests in flight); counting the
        ramp-up and drain would understate throughput at high concurrency on short runs.
        """
        completions = sorted(completions)
        first, last = max(warmup - 1, 0), len(completions) - concurrency
        if last - first < max(2, concurrency):
            first, last = max(warmup - 1, 0), len(completions) - 1
        if last > first:
            self.window_requests = last - first
            self.window_seconds = completions[last] - completions[first]


class Progress:
    """``label  done/total`` on stderr, rewritten in place on a terminal, a few lines otherwise."""

    def __init__(self, label: str, total: int, *, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._lock = threading.Lock()
        self._next_quarter = 1

    def step(self, n: int = 1) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._tty and (now - self._last > 0.2 or self.done >= self.total):
                self._last = now
                sys.stderr.write(f"\r  {self.label}  {self.done}/{self.total}   ")
                sys.stderr.flush()
            elif not self._tty and self.done * 4 >= self._next_quarter * self.total:
                self._next_quarter += 1
                sys.stderr.write(f"  {self.label}  {self.done}/{self.total}\n")

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------- HTTP


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(head)
        self.writer.write(body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise LoadError("chunked responses are not expected from the servers under test")
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = self.reader = None


def request_head(url: str, path: str, body: bytes, content_type: str = "image/jpeg") -> bytes:
    host = urlsplit(url).netloc
    method = "PUT" if content_type.startswith("image/") else "POST"  # a photo PUT, a peer's JSON POSTed
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


async def http_load(
    url: str,
    path: str,
    images: Sequence[bytes],
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    progress: Progress | None = None,
    max_errors: int = 10,
    content_type: str = "image/jpeg",
) -> LoadResult:
    """PUT the images (bodies of ``content_type``) round-robin to ``url + path``; time
    ``requests`` answers after ``warmup``."""
    split = urlsplit(url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    heads = [request_head(url, path, image, content_type) for image in images]
    result = LoadResult()
    ticket = itertools.count()
    total = warmup + requests
    timed_started = asyncio.Event()
    started_at = [0.0]
    completions: list[float] = []

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while (n := next(ticket)) < total:
                if n == warmup:
                    started_at[0] = time.perf_counter()
                    timed_started.set()
                i = n % len(images)
                t0 = time.perf_counter()
                try:
                    status, _ = await connection.request(heads[i], images[i])
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    await connection.close()
                    status = 0
                    if result.errors >= max_errors:
                        raise LoadError(f"{url}{path}: {exc!r}") from exc
                done = time.perf_counter()
                completions.append(done)
                latency = done - t0
                if n >= warmup:
                    result.latencies.append(latency)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                if status != 200:
                    result.errors += 1
                    if result.errors > max_errors:
                        raise LoadError(f"{url}{path}: {result.errors} failed requests (last status {status})")
                if progress is not None:
                    progress.step()
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started_at[0] if timed_started.is_set() else 0.0
    result.steady_window(completions, warmup, concurrency)
    return result


# --------------------------------------------------------------------------- in-process


def inprocess_load(
    classify: Callable[[bytes], object],
    images: Sequence[bytes],
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    progress: Progress | None = None,
) -> LoadResult:
    """Call ``classify`` in a closed loop: directly at concurrency 1, from a pool of threads above."""
    result = LoadResult()
    lock = threading.Lock()
    ticket = itertools.count()
    total = warmup + requests
    started_at = [0.0]
    completions: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                n = next(ticket)
            if n >= total:
                return
            if n == warmup:
                started_at[0] = time.perf_counter()
            image = images[n % len(images)]
            t0 = time.perf_counter()
            try:
                classify(image)
                status = 200
            except Exception:
                status = 500
            done = time.perf_counter()
            latency = done - t0
            with lock:
                completions.append(done)
                if n >= warmup:
                    result.latencies.append(latency)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                if status != 200:
                    result.errors += 1
            if progress is not None:
                progress.step()

    if concurrency == 1:
        worker()
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-limit") as pool:
            for future in [pool.submit(worker) for _ in range(concurrency)]:
                future.result()
    result.elapsed = time.perf_counter() - started_at[0]
    result.steady_window(completions, warmup, concurrency)
    return result
