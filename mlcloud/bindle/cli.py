"""``mlcloud bindle …``: the Bindle server and the commands of the reference ``bindle`` tool.

    serve            run the server over a directory
    push-invoice     create an invoice from a TOML file
    push-file        upload one file as a parcel of an existing invoice
    push DIR         invoice.toml + parcel files named by their labels, the invoice signed as
                     creator with the account key; a second push is a no-op
    info             print an invoice
    get-parcel       download a parcel (digest verified)
    yank             yank an invoice
    search           query invoices
    generate-label   print the label of a file, ready to paste into an invoice

Every client command takes ``--bindle-url`` (default ``Settings.effective_bindle_url``).
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from mlcloud.bindle.client import AsyncClient, load_invoice_dir
from mlcloud.bindle.models import DEFAULT_MEDIA_TYPE, Invoice, Label, decode, encode, to_toml
from mlcloud.digests import sha256_file
from mlcloud.errors import MLCloudError
from mlcloud.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _with_client(bindle_url: str, use: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``use(client)`` on a client of ``bindle_url``: the one client, driven by ``asyncio.run``."""

    async def run() -> T:
        async with AsyncClient(bindle_url) as client:
            return await use(client)

    return asyncio.run(run())


def _default_url() -> str:
    return Settings.from_env().effective_bindle_url


def _default_address() -> str:
    return Settings.from_env().bindle_address


def _default_directory() -> Path:
    return Settings.from_env().state_dir / "bindle"


def _bindle_url_option(f: F) -> F:
    return click.option(
        "--bindle-url", default=_default_url, show_default="$MLCLOUD_BINDLE_URL or the embedded server",
        help="Base URL of the Bindle server, ending in /v1.")(f)


def _output_option(f: F) -> F:
    return click.option("--output", "-o", "fmt", type=click.Choice(["toml", "json"]),
                        default="toml", show_default=True)(f)


def _friendly_errors(f: F) -> F:
    """Errors the user can act on print one line and exit 1, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except MLCloudError as exc:
            raise click.ClickException(f"{exc.kind}: {exc.message}") from exc

    return wrapper  # type: ignore[return-value]


def _echo_doc(obj: object, fmt: str) -> None:
    click.echo(encode(obj, as_json=fmt == "json").decode().rstrip("\n"))


@click.group("bindle")
def bindle() -> None:
    """Bindle: the model store (server and client)."""


@bindle.command()
@click.option("--directory", "-d", type=click.Path(file_okay=False, path_type=Path),
              default=_default_directory, show_default="$MLCLOUD_STATE_DIR/bindle",
              help="Where invoices and parcels are stored.")
@click.option("--address", "-a", default=_default_address, show_default="$MLCLOUD_BINDLE_ADDRESS",
              help="host:port to listen on.")
@click.option("--keyring", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Accept only invoices signed by a creator on this keyring (TOML).")
@click.option("--unauthenticated", is_flag=True,
              help="Accept invoices of any creator, or none (the default without --keyring); "
                   "the signatures they carry must still verify.")
@_friendly_errors
def serve(directory: Path, address: str, keyring: Path | None, unauthenticated: bool) -> None:
    """Run the Bindle server until Ctrl-C."""
    from mlcloud.bindle.server import serve as run

    if keyring and unauthenticated:
        raise click.UsageError("--keyring and --unauthenticated exclude each other")
    click.echo(f"bindle store in {directory}; creators "
               + (f"checked against {keyring}" if keyring else "not checked")
               + "; stored invoices get this server's host signature", err=True)
    run(directory, address, keyring)


@bindle.command("push-invoice")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--sign-with", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Sign as creator with this nkey seed file before pushing.")
@click.option("--signer", default="mlcloud", show_default=True, help="The signature's `by`.")
@_bindle_url_option
@_friendly_errors
def push_invoice(path: Path, sign_with: Path | None, signer: str, bindle_url: str) -> None:
    """Create the invoice in PATH (TOML)."""
    invoice = decode(path.read_bytes(), Invoice)
    if sign_with:
        from mlcloud.bindle.signing import sign_invoice
        from mlcloud.identity import KeyPair

        invoice = sign_invoice(invoice, signer, KeyPair.from_seed(sign_with.read_text()))
    created = _with_client(bindle_url, lambda client: client.create_invoice(invoice))
    click.echo(f"created {invoice.id}")
    for label in created.missing or []:
        click.echo(f"missing parcel {label.sha256} {label.name} ({label.size} bytes)")


@bindle.command("push-file")
@click.argument("bindle_id")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_bindle_url_option
@_friendly_errors
def push_file(bindle_id: str, path: Path, bindle_url: str) -> None:
    """Upload PATH as a parcel of BINDLE_ID (its sha256 must be in the invoice)."""
    sha = sha256_file(path)
    _with_client(bindle_url, lambda client: client.create_parcel(bindle_id, sha, path))
    click.echo(f"uploaded {path.name} ({sha}) to {bindle_id}")


@bindle.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_bindle_url_option
@_friendly_errors
def push(directory: Path, bindle_url: str) -> None:
    """Push DIRECTORY: its invoice.toml, signed as creator with the account key, then the parcel
    files (named by label) still missing."""
    from mlcloud.oci.keys import load_account

    invoice, files = load_invoice_dir(directory)
    account = load_account(Settings.from_env().keys_dir)
    result = _with_client(bindle_url, lambda client: client.push(invoice, files, creator=account))
    if result.nothing_to_do:
        click.echo(f"{invoice.id} is already pushed with all {len(invoice.parcels)} parcels; "
                   "nothing to do")
        return
    click.echo(("created " if result.invoice_created else "completed ") + invoice.id)
    for label in result.uploaded:
        click.echo(f"uploaded {label.name} ({label.size} bytes)")
    if result.already_stored:
        click.echo(f"{len(result.already_stored)} parcel(s) were already stored")


@bindle.command()
@click.argument("bindle_id")
@click.option("--yanked", is_flag=True, help="Show the invoice even if it is yanked.")
@_output_option
@_bindle_url_option
@_friendly_errors
def info(bindle_id: str, yanked: bool, fmt: str, bindle_url: str) -> None:
    """Print the invoice of BINDLE_ID (name/version)."""
    _echo_doc(_with_client(bindle_url, lambda client: client.get_invoice(bindle_id, yanked=yanked)), fmt)


@bindle.command("get-parcel")
@click.argument("bindle_id")
@click.argument("sha256")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: the label's name, in the current directory).")
@_bindle_url_option
@_friendly_errors
def get_parcel(bindle_id: str, sha256: str, output: Path | None, bindle_url: str) -> None:
    """Download parcel SHA256 of BINDLE_ID; its digest is checked before it is kept."""

    async def download(client: AsyncClient) -> Path:
        dest = output
        if dest is None:
            label = (await client.get_invoice(bindle_id)).label_for(sha256)
            dest = Path(Path(label.name).name if label else sha256)
        return await client.download_parcel(bindle_id, sha256, dest)

    click.echo(f"wrote {_with_client(bindle_url, download)}")


@bindle.command()
@click.argument("bindle_id")
@_bindle_url_option
@_friendly_errors
def yank(bindle_id: str, bindle_url: str) -> None:
    """Yank BINDLE_ID: it stays stored but is hidden unless asked for with --yanked."""
    _with_client(bindle_url, lambda client: client.yank_invoice(bindle_id))
    click.echo(f"yanked {bindle_id}")


@bindle.command()
@click.argument("query", required=False, default="")
@click.option("--version", "-v", "version", default=None, help="SemVer range (npm rules).")
@click.option("--offset", type=click.IntRange(min=0), default=None)
@click.option("--limit", type=click.IntRange(0, 255), default=None)
@click.option("--strict", is_flag=True, default=None, help="Match the name exactly.")
@click.option("--yanked", is_flag=True, default=None, help="Include yanked bindles.")
@click.option("--output", "-o", "fmt", type=click.Choice(["table", "toml", "json"]),
              default="table", show_default=True)
@_bindle_url_option
@_friendly_errors
def search(query: str, version: str | None, offset: int | None, limit: int | None,
           strict: bool | None, yanked: bool | None, fmt: str, bindle_url: str) -> None:
    """Find bindles whose name contains QUERY."""
    matches = _with_client(bindle_url, lambda client: client.query(
        query, version, offset=offset, limit=limit, strict=strict, yanked=yanked))
    if fmt != "table":
        _echo_doc(matches, fmt)
        return
    for invoice in matches.invoices:
        flags = " (yanked)" if invoice.yanked else ""
        description = f"  {invoice.bindle.description}" if invoice.bindle.description else ""
        click.echo(f"{invoice.id}{flags}  {len(invoice.parcels)} parcel(s){description}")
    shown = len(matches.invoices)
    click.echo(f"{shown} of {matches.total} match(es)" + ("; more with --offset" if matches.more
                                                          else ""))


@bindle.command("generate-label")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Label name (default: the file name).")
@click.option("--media-type", help="Media type (default: guessed from the name).")
def generate_label(path: Path, name: str | None, media_type: str | None) -> None:
    """Print PATH's label as a [[parcel]] entry to paste into an invoice."""
    label_name = name or path.name
    media = media_type or mimetypes.guess_type(label_name)[0] or DEFAULT_MEDIA_TYPE
    label = Label(sha256=sha256_file(path), media_type=media, name=label_name,
                  size=path.stat().st_size)
    click.echo(to_toml({"parcel": [{"label": msgspec.to_builtins(label)}]}).rstrip("\n"))
