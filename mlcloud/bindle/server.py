"""The Bindle v1 HTTP server (aiohttp), compatible with the reference server's API.

    POST   /v1/_i                              create an invoice (TOML or JSON body)
    GET    /v1/_i/{name}/{version}             the invoice (HEAD too; ?yanked=true for a yanked one)
    DELETE /v1/_i/{name}/{version}             yank it
    POST   /v1/_i/{name}/{version}@{sha256}    upload a parcel, streamed to disk
    GET    /v1/_i/{name}/{version}@{sha256}    stream it back (HEAD too)
    GET    /v1/_r/missing/{name}/{version}     the parcels not uploaded yet
    GET    /v1/_q                              query (q|query, v|version, o|offset, l|limit, …)
    GET    /v1/bindle-keys                     the server's host key, as a keyring (?roles=host)
    GET    /healthz

Every invoice it stores carries the server's own ``host`` signature, added after the invoice's
signatures are checked, as the reference server does: with a keyring, the invoice must pass
:func:`~mlcloud.bindle.signing.verify_invoice` (a trusted creator); without one, whatever
signatures it has must still verify. The host key is an nkey (N…) in the data directory
(``host.nk``, mode 0600), made on first start.

Bodies are TOML unless ``Accept`` asks for JSON; errors are always TOML ``error = "…"`` (as the
reference server sends them, whatever ``Accept`` says) with the status of the raised
:mod:`mlcloud.bindle.errors` class. :func:`create_app` builds the app (tests and
``mlcloud up`` embed it); :func:`serve` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path

from aiohttp import web

from mlcloud.bindle.errors import (
    BindleError,
    BindleInvalidRequest,
    InvalidParcel,
)
from mlcloud.bindle.models import (
    TOML_MIME,
    ErrorResponse,
    Invoice,
    InvoiceCreateResponse,
    Label,
    MessageResponse,
    MissingParcelsResponse,
    SignatureRole,
    decode,
    encode,
    parse_id,
    wants_json,
)
from mlcloud.bindle.signing import KeyRing, sign_with_nkey, verify_invoice, verify_signatures
from mlcloud.bindle.store import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, BindleStore
from mlcloud.identity import KeyKind, KeyPair, load_or_create
from mlcloud.settings import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("bindle_store", BindleStore)
KEYRING_KEY = web.AppKey("bindle_keyring", KeyRing)
HOST_KEY = web.AppKey("bindle_host_key", KeyPair)
HOST_KEY_FILE = "host.nk"
CHUNK_SIZE = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_QUERY_ALIASES = {"q": "query", "v": "version", "o": "offset", "l": "limit"}
_QUERY_FIELDS = {"query", "version", "offset", "limit", "strict", "yanked"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(request: web.Request, body: object, status: int = 200) -> web.Response:
    as_json = wants_json(request.headers.get("Accept"))
    return web.Response(
        body=encode(body, as_json=as_json),
        status=status,
        content_type="application/json" if as_json else "application/toml",
    )


def _error(status: int, message: str) -> web.Response:
    """``error = "…"`` as TOML whatever ``Accept`` says, as the reference server answers
    (``reply_from_error``), so clients written for it can read our errors."""
    return web.Response(body=encode(ErrorResponse(error=message), as_json=False), status=status,
                        content_type=TOML_MIME)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where failures become ``error = "…"`` bodies; nothing escapes as a bare 500."""
    try:
        return await handler(request)
    except BindleError as exc:
        return _error(exc.http_status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if exc.status == HTTPStatus.METHOD_NOT_ALLOWED and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal server error")


def _store(request: web.Request) -> BindleStore:
    return request.app[STORE_KEY]


def _flag(value: str, name: str) -> bool:
    # serde's query decoding takes exactly "true"/"false"; be as strict.
    if value not in ("true", "false"):
        raise BindleInvalidRequest(f"invalid value for {name}: {value!r}")
    return value == "true"


def _split_target(tail: str) -> tuple[str, str, str | None]:
    """``name/version`` or ``name/version@sha256`` → (name, version, sha256 or None)."""
    head, _, last = tail.rpartition("/")
    sha = None
    if "@" in last:
        last, _, sha = last.partition("@")
        if not _SHA256.match(sha):
            raise BindleInvalidRequest(f"invalid parcel sha256 {sha!r}")
    name, version = parse_id(f"{head}/{last}" if head else last)
    return name, version, sha


# -- invoices ---------------------------------------------------------------------------------


async def create_invoice(request: web.Request) -> web.Response:
    body = await request.read()
    invoice = decode(body, Invoice, content_type=request.headers.get("Content-Type"))
    keyring = request.app.get(KEYRING_KEY)
    if keyring is not None:
        verify_invoice(invoice, keyring)
    else:
        verify_signatures(invoice)
    invoice = sign_with_nkey(invoice, request.app[HOST_KEY], SignatureRole.HOST)
    missing = _store(request).create_invoice(invoice)
    if missing:
        return _reply(request, InvoiceCreateResponse(invoice=invoice, missing=missing), 202)
    return _reply(request, InvoiceCreateResponse(invoice=invoice), 201)


async def get_target(request: web.Request) -> web.StreamResponse:
    name, version, sha = _split_target(request.match_info["tail"])
    if sha is not None:
        return await _get_parcel(request, name, version, sha)
    yanked = _flag(request.query.get("yanked", "false"), "yanked")
    invoice = _store(request).get_invoice(name, version, yanked=yanked)
    return _reply(request, invoice)


async def delete_target(request: web.Request) -> web.Response:
    name, version, sha = _split_target(request.match_info["tail"])
    if sha is not None:
        raise web.HTTPMethodNotAllowed("DELETE", ["GET", "HEAD", "POST"])
    _store(request).yank_invoice(name, version)
    return _reply(request, MessageResponse(message="invoice yanked"))


async def post_target(request: web.Request) -> web.Response:
    name, version, sha = _split_target(request.match_info["tail"])
    if sha is None:
        raise web.HTTPMethodNotAllowed("POST", ["GET", "HEAD", "DELETE"])
    store = _store(request)
    label = _label_in_bindle(store, name, version, sha)
    if request.content_length is not None and request.content_length != label.size:
        # Refuse before reading a byte: the body cannot be this parcel.
        raise InvalidParcel(
            f"parcel {sha} is {request.content_length} bytes, its label says {label.size}")
    await store.write_parcel(label, request.content.iter_chunked(CHUNK_SIZE))
    return _reply(request, MessageResponse(message="parcel created"))


def _label_in_bindle(store: BindleStore, name: str, version: str, sha: str) -> Label:
    invoice = store.get_invoice(name, version)
    label = invoice.label_for(sha)
    if label is None:
        raise InvalidParcel(f"Parcel SHA {sha} does not exist in invoice {name}/{version}")
    return label


async def _get_parcel(request: web.Request, name: str, version: str, sha: str) -> web.StreamResponse:
    store = _store(request)
    label = _label_in_bindle(store, name, version, sha)
    path = store.open_parcel(sha)
    # FileResponse streams with sendfile: the parcel never passes through Python memory.
    return web.FileResponse(path, chunk_size=CHUNK_SIZE,
                            headers={"Content-Type": label.media_type})


# -- relationships and queries ----------------------------------------------------------------


async def get_missing(request: web.Request) -> web.Response:
    name, version, sha = _split_target(request.match_info["tail"])
    if sha is not None:
        raise BindleInvalidRequest("missing parcels are listed per bindle, not per parcel")
    store = _store(request)
    invoice = store.get_invoice(name, version)
    return _reply(request, MissingParcelsResponse(missing=store.missing_parcels(invoice)))


async def query_invoices(request: web.Request) -> web.Response:
    options: dict[str, str] = {}
    for key, value in request.query.items():
        field = _QUERY_ALIASES.get(key, key)
        if field not in _QUERY_FIELDS:
            raise BindleInvalidRequest(f"unknown query parameter {key!r}")
        if field in options:
            raise BindleInvalidRequest(f"duplicate query parameter {field!r}")
        options[field] = value
    try:
        offset = int(options.get("offset", "0"))
        limit = int(options.get("limit", str(DEFAULT_QUERY_LIMIT)))
    except ValueError as exc:
        raise BindleInvalidRequest(f"offset and limit must be integers: {exc}") from exc
    if offset < 0 or not 0 <= limit <= MAX_QUERY_LIMIT:
        raise BindleInvalidRequest(f"offset must be >= 0 and limit in 0..{MAX_QUERY_LIMIT}")
    matches = _store(request).query(
        options.get("query", ""),
        options.get("version", ""),
        offset=offset,
        limit=limit,
        strict=_flag(options.get("strict", "false"), "strict"),
        yanked=_flag(options.get("yanked", "false"), "yanked"),
    )
    return _reply(request, matches)


async def get_host_keys(request: web.Request) -> web.Response:
    """The keyring protocol's answer: like the reference, only the host key is published."""
    roles = request.query.get("roles")
    wanted = {role.strip().lower() for role in roles.split(",")} if roles is not None else None
    keyring = KeyRing()
    if wanted is None or SignatureRole.HOST.value in wanted:
        key = request.app[HOST_KEY]
        keyring = keyring.add(f"Bindle host {key.public_key}", key, [SignatureRole.HOST])
    return _reply(request, keyring)


def load_host_key(directory: str | Path) -> KeyPair:
    """The server's host signing key, kept in its data directory (mode 0600)."""
    return load_or_create(Path(directory) / HOST_KEY_FILE, KeyKind.HOST)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="OK")


# -- app and entry point ----------------------------------------------------------------------


def create_app(
    directory: str | Path,
    keyring: KeyRing | str | Path | None = None,
    *,
    max_invoice_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """A Bindle server over ``directory``; with a ``keyring`` invoices need a trusted creator."""
    app = web.Application(middlewares=[_errors_middleware], client_max_size=max_invoice_bytes)
    app[STORE_KEY] = BindleStore(directory).open()
    app[HOST_KEY] = load_host_key(directory)
    if keyring is not None:
        app[KEYRING_KEY] = keyring if isinstance(keyring, KeyRing) else KeyRing.load(keyring)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/_i", create_invoice)
    app.router.add_get("/v1/_i/{tail:.+}", get_target)  # HEAD comes with GET
    app.router.add_delete("/v1/_i/{tail:.+}", delete_target)
    app.router.add_post("/v1/_i/{tail:.+}", post_target)
    app.router.add_get("/v1/_r/missing/{tail:.+}", get_missing)
    app.router.add_get("/v1/_q", query_invoices)
    app.router.add_get("/v1/bindle-keys", get_host_keys)
    return app


async def run_server(app: web.Application, host: str, port: int,
                     ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; the first signal stops gracefully, a second kills."""
    from mlcloud.servers import running_app, wait_for_stop_signal

    async with running_app(app, f"{host}:{port}", "the Bindle server", access_log=None) as address:
        url = f"http://{address}/v1"
        (ready or (lambda u: print(f"bindle server listening on {u}", flush=True)))(url)
        await wait_for_stop_signal("bindle server: stopping")


def serve(directory: str | Path, address: str, keyring: KeyRing | str | Path | None = None) -> None:
    """Run a Bindle server over ``directory`` on ``address`` (``host:port``) until stopped."""
    from mlcloud.settings import split_address

    host, port = split_address(address)
    Path(directory).mkdir(parents=True, exist_ok=True)
    app = create_app(directory, keyring)
    asyncio.run(run_server(app, host, port))
