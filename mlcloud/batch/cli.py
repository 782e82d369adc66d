"""``mlcloud predict --model NAME INPUT --out results.jsonl``: a batch job from a shell."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from mlcloud.batch.job import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES,
    DEFAULT_ROWS_PER_REQUEST,
    DEFAULT_TIMEOUT,
    IMAGE_ROUTES,
    BatchSummary,
    JobSettings,
    run_job,
)
from mlcloud.batch.journal import Journal
from mlcloud.batch.run import default_url, progress_bar
from mlcloud.batch.sources import open_source
from mlcloud.errors import MLCloudError
from mlcloud.settings import Settings

INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT)


@click.command("predict")
@click.option("--model", "-m", required=True, help="The route that scores the rows (see `mlcloud models list`).")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines, one per row; an existing file is resumed (its rows are not sent again).")
@click.option("--concurrency", "-c", type=click.IntRange(1), default=DEFAULT_CONCURRENCY, show_default=True,
              help="Requests in flight at most.")
@click.option("--rows-per-request", type=click.IntRange(1), default=DEFAULT_ROWS_PER_REQUEST, show_default=True,
              help="Rows of a CSV or JSONL file sent in one /predict request.")
@click.option("--route", "image_route", type=click.Choice(IMAGE_ROUTES), default="matches", show_default=True,
              help="For images: top-k labels (matches) or the model's raw output (preprocess).")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Labels per image (matches).")
@click.option("--proba", is_flag=True, help="For rows: the class probabilities instead of the class.")
@click.option("--retry-failed", is_flag=True, help="Send the rows that failed in an earlier run again.")
@click.option("--retries", type=click.IntRange(0), default=DEFAULT_RETRIES, show_default=True,
              help="Times a request is made again when the lattice is busy or away (502, 503, 504, no answer).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds per request.")
@click.option("--url", envvar="MLCLOUD_URL",
              help="The lattice's HTTP API (default: from MLCLOUD_HTTP_ADDRESS, http://localhost:8078).")
@click.option("--api-key", envvar="MLCLOUD_API_KEY", default="", help="Sent as Authorization: Bearer KEY.")
@click.option("--progress/--no-progress", default=None, help="The progress bar (default: on a terminal).")
def predict_command(model: str, input_path: Path, out: Path, concurrency: int, rows_per_request: int,
                    image_route: str, top: int, proba: bool, retry_failed: bool, retries: int, timeout: float,
                    url: str | None, api_key: str, progress: bool | None) -> None:
    """Score every row of INPUT with route MODEL through the lattice; one JSON line per row in --out.

    INPUT is a folder of images (key: the file's path in it), a CSV file with a header of feature
    names (key: the row number) or a JSONL file of instances (key: the line number, or the "key" of
    a line {"key": …, "instance": …}). Failed rows are written with their error. Stopped (Ctrl-C),
    the same command resumes where it stopped. Exit status 1 when the output holds failed rows.
    """
    job = JobSettings(url=url or default_url(Settings.from_env()), model=model, concurrency=concurrency,
                      rows_per_request=rows_per_request, image_route=image_route, top=top, proba=proba,
                      api_key=api_key, timeout=timeout, retries=retries)
    summary = BatchSummary()
    try:
        source = open_source(input_path)
        journal = Journal(out, retry_failed=retry_failed).open()
    except MLCloudError as err:
        raise click.ClickException(f"{err.kind}: {err.message}") from err
    try:
        with progress_bar(source, journal, enabled=progress) as bar:
            asyncio.run(run_job(job, source, journal, summary, bar.update))
    except KeyboardInterrupt:
        summary.interrupted = True
        click.echo(str(summary), err=True)
        raise SystemExit(INTERRUPTED) from None
    except MLCloudError as err:
        raise click.ClickException(f"{err.kind}: {err.message}") from err
    finally:
        journal.close()
    click.echo(str(summary), err=True)
    failed = summary.failed + journal.failed_before
    if failed:
        click.echo(f"{failed} rows failed: {out} has their errors; --retry-failed sends them again", err=True)
        raise SystemExit(1)
