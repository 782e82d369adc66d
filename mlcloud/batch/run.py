"""``mlcloud.predict``: a batch job from Python, synchronous for a notebook as ``mlcloud.deploy`` is.

    mlcloud.predict("iris", X_test)                        # rows in memory → summary.lines
    mlcloud.predict("iris", "test.csv", "scores.jsonl")    # as `mlcloud predict`, resumable
    mlcloud.predict("mobilenetv27", "photos/", "labels.jsonl")
"""

from __future__ import annotations

import sys
from os import PathLike
from pathlib import Path
from typing import Any

from mlcloud.batch.job import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ROWS_PER_REQUEST,
    BatchSummary,
    JobSettings,
    run_job,
)
from mlcloud.batch.journal import Journal
from mlcloud.batch.sources import Source, open_source, sequence_rows
from mlcloud.settings import Settings


def predict(model: str, data: Any, out: str | PathLike[str] | None = None, *, settings: Settings | None = None,
            url: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
            rows_per_request: int = DEFAULT_ROWS_PER_REQUEST, top: int = 5, proba: bool = False, api_key: str = "",
            retry_failed: bool = False, progress: bool = True) -> BatchSummary:
    """Score ``data`` (a folder, a .csv or .jsonl path, or rows: a list, array or DataFrame) with the
    route ``model``. With ``out``, each row's line goes to that file and a rerun resumes; without,
    the lines come back in ``summary.lines``, in input order. Failed rows carry their error."""
    from mlcloud.deployment import run_blocking

    return run_blocking(lambda: predict_async(model, data, out, settings=settings, url=url, concurrency=concurrency,
                                      rows_per_request=rows_per_request, top=top, proba=proba, api_key=api_key,
                                      retry_failed=retry_failed, progress=progress))


async def predict_async(model: str, data: Any, out: str | PathLike[str] | None = None, *,
                        settings: Settings | None = None, url: str | None = None,
                        concurrency: int = DEFAULT_CONCURRENCY, rows_per_request: int = DEFAULT_ROWS_PER_REQUEST,
                        top: int = 5, proba: bool = False, api_key: str = "", retry_failed: bool = False,
                        progress: bool = True) -> BatchSummary:
    source = open_source(Path(data)) if isinstance(data, (str, PathLike)) else sequence_rows(data)
    job = JobSettings(url=url or default_url(settings or Settings.from_env()), model=model, concurrency=concurrency,
                      rows_per_request=rows_per_request, top=top, proba=proba, api_key=api_key)
    journal = Journal(Path(out) if out is not None else None, retry_failed=retry_failed).open()
    summary = BatchSummary()
    try:
        with progress_bar(source, journal, enabled=progress) as bar:
            await run_job(job, source, journal, summary, bar.update)
    finally:
        journal.close()
    if out is None:
        order = {row.key: n for n, row in enumerate(source.rows())}
        summary.lines = sorted(journal.lines, key=lambda line: order[line["key"]])
    return summary


def default_url(settings: Settings) -> str:
    """The HTTP API of the lattice ``settings`` describe (``MLCLOUD_HTTP_ADDRESS``)."""
    from mlcloud.deployment import base_url

    return base_url(settings)


def progress_bar(source: Source, journal: Journal, *, enabled: bool | None) -> Any:
    """A tqdm bar over the rows (rate and time left); ``enabled=None``: only on a terminal."""
    from tqdm import tqdm

    return tqdm(total=source.total, initial=len(journal.finished), unit="row", desc="predict", file=sys.stderr,
                disable=None if enabled is None else not enabled, dynamic_ncols=True, smoothing=0.1)
