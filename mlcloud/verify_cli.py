"""``mlcloud verify``: make a request (or read a saved answer's headers) and check which model
answered against the Bindle server's signed invoice (:mod:`mlcloud.verification`).

Exit status: 0 every model the answer names verified, 1 a check failed, 2 nothing could be
checked (the request failed, the answer names no model, Bindle cannot be reached, bad usage).
"""

from __future__ import annotations

import json
import mimetypes
import time
from pathlib import Path
from typing import IO

import click

from mlcloud.settings import Settings

COULD_NOT_CHECK = 2


@click.command("verify")
@click.argument("url", required=False)
@click.option("-T", "--upload-file", "upload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PUT this file (an image for /MODEL/matches), as curl -T does.")
@click.option("-d", "--data", help="POST this JSON body (@FILE reads it from FILE), as curl -d does.")
@click.option("-X", "--request", "method", help="HTTP method (default PUT with -T, POST with -d).")
@click.option("--headers", "saved", type=click.File("r"),
              help="Check a saved answer instead: its headers as `curl -D FILE` or `curl -i` wrote them (- for stdin).")
@click.option("--bindle-url", help="The Bindle server to check against (default: the settings').")
@click.option("--json", "as_json", is_flag=True, help="The verdicts as JSON.")
def verify_command(url: str | None, upload: Path | None, data: str | None, method: str | None, saved: IO[str] | None,
                   bindle_url: str | None, as_json: bool) -> None:
    """Check that the model which answered URL is the one its bindle's signed invoice names.

    \b
      mlcloud verify http://127.0.0.1:8078/mobilenetv27/matches -T images/cat.jpg
      mlcloud verify http://127.0.0.1:8078/iris/predict -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
      curl -s -D answer.txt -T cat.jpg http://127.0.0.1:8078/mobilenetv27/matches
      mlcloud verify --headers answer.txt
    """
    from mlcloud.errors import MLCloudError
    from mlcloud.verification import parse_saved_headers, verify

    settings = Settings.from_env(bindle_url=bindle_url)
    if (url is None) == (saved is None):
        raise click.UsageError("give a URL to ask, or --headers FILE of a saved answer (not both)")
    headers = parse_saved_headers(saved.read()) if saved is not None else _ask(url or "", upload, data, method, as_json)
    try:
        verdicts = verify(headers, settings=settings)
    except MLCloudError as err:
        click.echo(f"cannot verify: {err.kind}: {err.message}", err=True)
        raise SystemExit(COULD_NOT_CHECK) from err
    if as_json:
        click.echo(json.dumps([{"bindle_id": v.source.bindle_id, "sha256": v.source.sha256, "ok": v.ok,
                                "checks": [{"what": c.what, "ok": c.ok} for c in v.checks]} for v in verdicts],
                              indent=2))
    else:
        for verdict in verdicts:
            click.echo(f"model   {verdict.source.bindle_id}\nsha256  {verdict.source.sha256}")
            for check in verdict.checks:
                click.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.what}")
        ok = all(v.ok for v in verdicts)
        click.echo("VERIFIED" if ok else "NOT VERIFIED")
    if not all(v.ok for v in verdicts):
        raise SystemExit(1)


def _ask(url: str, upload: Path | None, data: str | None, method: str | None, quiet: bool) -> dict[str, str]:
    """Send the request; the answer's headers (exit 2 when it is not a successful answer)."""
    import httpx

    if upload is not None and data is not None:
        raise click.UsageError("give -T FILE or -d DATA, not both")
    if upload is None and data is None:
        raise click.UsageError("give the request's body: -T FILE (an image) or -d DATA (JSON)")
    if upload is not None:
        body, content_type = upload.read_bytes(), mimetypes.guess_type(upload.name)[0] or "application/octet-stream"
    else:
        assert data is not None
        body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
        content_type = "application/json"
    url = url if "://" in url else f"http://{url}"  # as curl takes it
    started = time.perf_counter()
    try:
        answer = httpx.request(method or ("PUT" if upload is not None else "POST"), url, content=body,
                               headers={"Content-Type": content_type}, timeout=60)
    except httpx.HTTPError as exc:
        click.echo(f"cannot verify: {url}: {exc}", err=True)
        raise SystemExit(COULD_NOT_CHECK) from exc
    took = (time.perf_counter() - started) * 1000
    if not quiet:
        click.echo(f"answer  {answer.status_code} from {url} in {took:.1f} ms")
    if answer.is_error:
        click.echo(f"cannot verify: the answer is an error: {answer.text[:500]}", err=True)
        raise SystemExit(COULD_NOT_CHECK)
    return dict(answer.headers)
