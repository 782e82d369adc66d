"""A batch job: every row of a source through the lattice's HTTP API, ``concurrency`` at a time.

The job goes through the httpserver as any client does, so API keys, tracing, metrics and the
answers' ``X-Model`` apply to it as to online traffic. Straight RPC to the api actor over NATS
would save one hop, but the CLI's NATS credentials may only send control requests
(:func:`mlcloud.lattice.auth.ctl_permissions`), and measured it was no faster; over HTTP the job
reaches the HTTP path's throughput (docs/batch.md, "Why HTTP" and "Throughput"). The client is
aiohttp's: it costs about a tenth of the CPU per request that httpx's does, which counts on a
machine the lattice shares.

Images go to ``PUT /{model}/{image_route}`` (``matches``: top-k labels), one per request. Rows of
features go to ``POST /{model}/predict`` up to ``rows_per_request`` at a time; when such a request
fails other than by the lattice being busy (a 4xx: one of its rows is bad; a 500: say, a model
whose batch size is fixed), its rows are sent again one by one, so only a bad row fails. A
request that finds the lattice busy or away (a connection error, 502, 503, 504) is made again up
to ``retries`` times, waiting longer each time; then its rows are written as failed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mlcloud.batch.journal import Journal, error_line, is_failed, result_line
from mlcloud.batch.sources import InputError, Row, Source, SourceKind, chunks
from mlcloud.errors import MLCloudError, NotFound, error_from_wire

DEFAULT_CONCURRENCY = 16
DEFAULT_ROWS_PER_REQUEST = 32
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 60.0  # seconds per request
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_PAUSE = 0.5  # seconds before the first retry, doubling after each
IMAGE_ROUTES = ("matches", "preprocess")
CONTENT_TYPES = {".png": "image/png", ".gif": "image/gif", ".bmp": "image/bmp", ".webp": "image/webp"}


@dataclass(frozen=True)
class JobSettings:
    url: str  # the lattice's HTTP API, e.g. http://localhost:8078
    model: str
    concurrency: int = DEFAULT_CONCURRENCY
    rows_per_request: int = DEFAULT_ROWS_PER_REQUEST
    image_route: str = "matches"
    top: int = 5
    proba: bool = False
    api_key: str = ""
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES


@dataclass
class BatchSummary:
    """What a job did; it is filled in as rows finish, so an interrupted job's summary is right too."""

    total: int = 0  # rows in the input
    skipped: int = 0  # finished by an earlier run (kept in the output)
    done: int = 0  # scored by this run
    failed: int = 0  # written with their error by this run
    seconds: float = 0.0
    interrupted: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list)  # the results, in input order (Python API)

    @property
    def rate(self) -> float:
        """Rows per second finished by this run."""
        return (self.done + self.failed) / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        text = f"{self.done} done, {self.failed} failed in {self.seconds:.1f} s ({self.rate:.1f} rows/s)"
        if self.skipped:
            text += f"; {self.skipped} finished before"
        left = self.total - self.skipped - self.done - self.failed
        if self.interrupted and left > 0:
            text += f"; interrupted with {left} to go: run the same command again to resume"
        return text


Progress = Callable[[int], None]


async def run_job(settings: JobSettings, source: Source, journal: Journal, summary: BatchSummary,
                  progress: Progress = lambda n: None) -> BatchSummary:
    """Score every row of ``source`` not in ``journal`` yet, writing each as it finishes."""
    summary.total = source.total
    summary.skipped = len(journal.finished)
    started = time.monotonic()
    headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    async with aiohttp.ClientSession(settings.url, connector=connector, timeout=timeout, headers=headers,
                                     raise_for_status=False) as session:
        client = _Client(session, settings, source.kind)
        await client.check_model()
        units = _units(source, journal, settings.rows_per_request)

        def finished(line: dict[str, Any]) -> None:
            journal.write(line)
            if is_failed(line):
                summary.failed += 1
            else:
                summary.done += 1
            summary.seconds = time.monotonic() - started
            progress(1)

        async def worker() -> None:
            for unit in units:  # one shared iterator: each unit goes to one worker
                for line in await client.score(unit):
                    finished(line)

        try:
            async with asyncio.TaskGroup() as workers:
                for n in range(settings.concurrency):
                    workers.create_task(worker(), name=f"batch-worker-{n}")
        except asyncio.CancelledError:
            summary.interrupted = True
            raise
        except BaseExceptionGroup as group:  # a worker failed (an input unreadable midway): that error
            raise group.exceptions[0] from None
        finally:
            summary.seconds = time.monotonic() - started
    return summary


def _units(source: Source, journal: Journal, rows_per_request: int) -> Iterator[list[Row]]:
    """The rows still to do, in requests: one image, up to ``rows_per_request`` rows of features."""
    todo = (row for row in source.rows() if row.key not in journal.finished)
    return chunks(todo, 1 if source.kind is SourceKind.IMAGES else max(1, rows_per_request))


class _Client:
    def __init__(self, session: aiohttp.ClientSession, settings: JobSettings, kind: SourceKind) -> None:
        self.session = session
        self.settings = settings
        self.kind = kind
        model = settings.model
        if kind is SourceKind.IMAGES:
            self.method, self.path = "PUT", f"/{model}/{settings.image_route}"
            self.params = {"top": str(settings.top)} if settings.image_route == "matches" else {}
        else:
            self.method, self.path = "POST", f"/{model}/predict"
            self.params = {"proba": "1"} if settings.proba else {}

    async def check_model(self) -> None:
        """Fail before the first row when the model is not served, or takes the other kind of input."""
        try:
            status, body, _ = await self._request("GET", f"/models/{self.settings.model}")
        except LatticeUnreachable as exc:
            raise LatticeUnreachable(f"{exc.message}; is the lattice up? (--url, MLCLOUD_HTTP_ADDRESS)") from exc
        if status != 200:
            refused = _error(status, body)
            hint = "; `mlcloud models list` shows the routes" if status == 404 else ""
            raise type(refused)(refused.message + hint)
        inputs = json.loads(body).get("inputs") or []
        rank = len(inputs[0].get("shape") or []) if inputs else 0
        if self.kind is SourceKind.ROWS and rank != 2:
            raise InputError(f"model {self.settings.model!r} takes tensors of shape "
                             f"{inputs[0].get('shape') if inputs else None}, not rows of features: give it images")
        if self.kind is SourceKind.IMAGES and rank == 2:
            raise InputError(f"model {self.settings.model!r} takes rows of features, not images: "
                             "give it a CSV or JSONL file")

    async def score(self, unit: list[Row]) -> list[dict[str, Any]]:
        """The lines of the unit's rows."""
        lines = [error_line(row.key, None, InputError.kind, row.problem) for row in unit if row.problem]
        rows = [row for row in unit if not row.problem]
        if not rows:
            return lines
        if self.kind is SourceKind.IMAGES:
            [row] = rows
            return lines + [await self._one_image(row)]
        status, body, model = await self._send(json.dumps({"instances": [r.instance for r in rows]}).encode(),
                                               "application/json")
        if status == 200:
            predictions = json.loads(body)["predictions"]
            return lines + [result_line(r.key, status, model, p) for r, p in zip(rows, predictions, strict=True)]
        if len(rows) > 1 and status != 0 and status not in RETRY_STATUSES:
            for row in rows:  # one bad row fails the request: find it, let the others through
                lines += await self.score([row])
            return lines
        err = _error(status, body)
        return lines + [error_line(r.key, status or None, err.kind, err.message) for r in rows]

    async def _one_image(self, row: Row) -> dict[str, Any]:
        suffix = str(row.key).rpartition(".")[2].lower()
        status, body, model = await self._send(row.image, CONTENT_TYPES.get(f".{suffix}", "image/jpeg"))
        if status == 200:
            return result_line(row.key, status, model, json.loads(body))
        err = _error(status, body)
        return error_line(row.key, status or None, err.kind, err.message)

    async def _send(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """(status, body, the X-Model that answered); status 0 for a request that got no answer."""
        pause = RETRY_PAUSE
        for attempt in range(self.settings.retries + 1):
            try:
                status, answer, model = await self._request(self.method, self.path, body, content_type, self.params)
            except MLCloudError as err:
                status, answer, model = 0, json.dumps({"error": err.to_wire()}).encode(), ""
            if (status not in RETRY_STATUSES and status != 0) or attempt == self.settings.retries:
                break
            await asyncio.sleep(pause)
            pause *= 2
        return status, answer, model

    async def _request(self, method: str, path: str, body: bytes = b"", content_type: str = "",
                       params: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        headers = {"content-type": content_type} if content_type else {}
        try:
            async with self.session.request(method, path, data=body or None, params=params,
                                            headers=headers) as response:
                return response.status, await response.read(), response.headers.get("x-model", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise LatticeUnreachable(f"{method} {self.settings.url}{path}: {what}") from exc


class LatticeUnreachable(MLCloudError):
    """No answer from the lattice's HTTP API (refused, reset, timed out)."""


def _error(status: int, body: bytes) -> MLCloudError:
    """The error an answer's body carries (mlcloud's ``{"error": {kind, message}}``), or one naming the status."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return error_from_wire(parsed["error"])
    if status == 404:
        return NotFound(f"HTTP 404: {body[:200]!r}")
    return MLCloudError(f"HTTP {status}: {body[:200]!r}")
