"""``mlcloud bench --batch``: batch scoring (:mod:`mlcloud.batch`) beside the HTTP path, at one concurrency.

Both score the test photos with ``PUT /mobilenetv27/matches`` on the same lattice, in turns
(HTTP, batch, batch, HTTP, …) so the machine's noise falls on both alike: the HTTP path with the
bench's own load generator (:func:`~mlcloud.bench.loadgen.http_load`, the cheapest client there
is), the batch path as ``mlcloud predict`` runs, over a folder of copies of the photos, writing its
output file. Each round's throughput is counted the same way for both (the answers between the
last warm-up answer and the start of the drain: :meth:`LoadResult.steady_window`); the ratio is of
the medians. Without ``url`` it starts the lattice itself (:mod:`mlcloud.bench.stack`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcloud.batch import BatchSummary, JobSettings, Journal, open_source, run_job
from mlcloud.bench.loadgen import LoadResult, http_load
from mlcloud.bench.runner import ROUTE, STARTUP_TIMEOUT, child_process, work_dir_or_temp
from mlcloud.bench.workload import load_images

TARGET_RATIO = 0.9  # issue 17: batch jobs reach at least 0.9× the HTTP path's throughput at concurrency 16


@dataclass
class BatchComparison:
    concurrency: int
    requests: int  # timed per round and path
    http: list[float] = field(default_factory=list)  # requests/s of each round
    batch: list[float] = field(default_factory=list)  # rows/s of each round
    batch_failed: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.batch) / statistics.median(self.http)

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "requests": self.requests, "http_rps": self.http,
                "batch_rps": self.batch, "ratio": round(self.ratio, 3), "target": TARGET_RATIO,
                "met": self.ratio >= TARGET_RATIO, "batch_failed": self.batch_failed}

    def __str__(self) -> str:
        def rounds(values: list[float]) -> str:
            return ", ".join(f"{v:.1f}" for v in values)

        return (f"c={self.concurrency}, {self.requests} requests per round and path\n"
                f"  HTTP path   {statistics.median(self.http):7.1f} req/s  (rounds: {rounds(self.http)})\n"
                f"  batch       {statistics.median(self.batch):7.1f} rows/s (rounds: {rounds(self.batch)})\n"
                f"  batch / HTTP = {self.ratio:.2f} (target ≥ {TARGET_RATIO}: "
                f"{'met' if self.ratio >= TARGET_RATIO else 'NOT met'}); failed rows: {self.batch_failed}")


async def compare(url: str, work: Path, *, concurrency: int = 16, requests: int = 200, rounds: int = 3,
                  say: Callable[[str], None] = lambda line: None) -> BatchComparison:
    images = load_images()
    warmup = concurrency
    folder = work / "batch-input"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(warmup + requests):
        name, data = images[n % len(images)]
        (folder / f"{n:05d}-{name}").write_bytes(data)
    result = BatchComparison(concurrency, requests)
    for r in range(rounds):
        for path in ("http", "batch") if r % 2 == 0 else ("batch", "http"):
            if path == "http":
                load = await http_load(url, f"/{ROUTE}/matches", [data for _, data in images],
                                       concurrency=concurrency, requests=requests, warmup=warmup)
                result.http.append(load.throughput)
            else:
                throughput, failed = await _batch_round(url, folder, work / f"out-{r}.jsonl", concurrency, warmup)
                result.batch.append(throughput)
                result.batch_failed += failed
            say(f"  round {r + 1}/{rounds} {path:5s} {(result.http if path == 'http' else result.batch)[-1]:7.1f}/s")
    return result


async def _batch_round(url: str, folder: Path, out: Path, concurrency: int, warmup: int) -> tuple[float, int]:
    completions: list[float] = []
    journal = Journal(out).open()
    summary = BatchSummary()
    try:
        await run_job(JobSettings(url=url, model=ROUTE, concurrency=concurrency), open_source(folder), journal,
                      summary, lambda n: completions.append(time.perf_counter()))
    finally:
        journal.close()
    window = LoadResult()
    window.steady_window(completions, warmup, concurrency)
    return window.throughput, summary.failed


def run_batch_bench(*, url: str | None, concurrency: int, requests: int, rounds: int, work_dir: Path | None,
                    say: Callable[[str], None]) -> BatchComparison:
    """The comparison against the lattice at ``url``, or one started for it."""
    import sys

    with work_dir_or_temp(work_dir) as work, contextlib.ExitStack() as children:
        if url is None:
            say(f"mlcloud: the whole lattice, PUT /{ROUTE}/matches (starting it…)")
            _, line = children.enter_context(child_process(
                [sys.executable, "-m", "mlcloud.bench.stack", "--state-dir", str(work / "stack")], "{",
                timeout=STARTUP_TIMEOUT, log=work / "mlcloud.log"))
            url = str(json.loads(line)["http_url"])
        say(f"batch vs HTTP path at c={concurrency} against {url}")
        with tempfile.TemporaryDirectory(prefix="batch-", dir=work) as tmp:
            return asyncio.run(compare(url, Path(tmp), concurrency=concurrency, requests=requests, rounds=rounds,
                                       say=say))
