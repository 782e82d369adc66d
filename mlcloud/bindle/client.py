"""The Bindle v1 client on httpx: :class:`AsyncClient` (blocking callers use ``asyncio.run``).

It speaks to this package's server or the reference one, at a base URL ending in ``/v1``
(``Settings.effective_bindle_url``). Parcels stream both ways; every download is hashed and a
parcel whose sha256 does not match raises :class:`ParcelCorrupt` (``download_parcel`` then leaves
nothing behind). HTTP failures become the typed errors of :mod:`mlcloud.bindle.errors`, built
in one place (:func:`_raise_for`); transport failures become :class:`BindleUnavailable`.

``push`` is the idempotent upload the CLI and ``make models`` use: create the invoice (or find
the identical one already there), then upload only the parcels the server says are missing.
Given a ``creator`` key (the account key, for mlcloud), it signs the invoice as creator first;
an identical invoice already stored without any creator signature is then an error, since what
loads models refuses it and an invoice cannot be replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote

import httpx

from mlcloud.bindle.errors import (
    AlreadyExists,
    BindleError,
    BindleInvalidRequest,
    BindleServerError,
    BindleUnavailable,
    CreateYanked,
    InvalidInvoice,
    InvalidParcel,
    InvoiceNotFound,
    ParcelCorrupt,
    ParcelNotFound,
    SignatureInvalid,
    Yanked,
)
from mlcloud.bindle.models import (
    JSON_MIME,
    TOML_MIME,
    ErrorResponse,
    Invoice,
    InvoiceCreateResponse,
    Label,
    Matches,
    MissingParcelsResponse,
    SignatureRole,
    decode,
    to_toml,
)
from mlcloud.bindle.signing import KeyRing, sign_with_nkey

if TYPE_CHECKING:
    from mlcloud.identity import KeyPair

T = TypeVar("T")

CHUNK_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
ParcelData = bytes | str | os.PathLike[str]


@dataclass
class PushResult:
    """What :meth:`AsyncClient.push` did; ``nothing_to_do`` when the bindle was complete already."""

    bindle_id: str
    invoice_created: bool
    uploaded: list[Label] = field(default_factory=list)
    already_stored: list[Label] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.invoice_created and not self.uploaded


# -- the request and response rules ----------------------------------------------------------


def _bindle_id(bindle: str | Invoice) -> str:
    return bindle.id if isinstance(bindle, Invoice) else bindle


def _invoice_path(bindle: str | Invoice) -> str:
    return "_i/" + quote(_bindle_id(bindle), safe="/")


def _parcel_path(bindle: str | Invoice, sha256: str) -> str:
    return f"{_invoice_path(bindle)}@{sha256}"


def _error_message(response: httpx.Response) -> str:
    """The ``error`` of a failed answer. The reference server sends it as TOML whatever the
    ``Accept`` or ``Content-Type`` says, so TOML is tried first, then JSON (a proxy or an older
    mlcloud may send that); a body that is neither is shown as it came."""
    for content_type in (TOML_MIME, JSON_MIME):
        with contextlib.suppress(BindleError):
            return decode(response.content, ErrorResponse, content_type=content_type,
                          error=BindleError).error
    return response.text.strip() or response.reason_phrase


def _raise_for(response: httpx.Response, context: str) -> None:
    """Turn a failed answer into its typed error; ``context`` says which route answered."""
    status = response.status_code
    if status < 400:
        return
    message = _error_message(response)
    details = {"status": status, "url": str(response.request.url)}
    err: type[BindleError]
    if status == 400:
        lowered = message.lower()
        if "invalid bindle id" in lowered or "sha256" in lowered and "invalid" in lowered:
            err = BindleInvalidRequest
        elif context == "create":
            signature = "signature" in lowered or "keyring" in lowered
            err = SignatureInvalid if signature else InvalidInvoice
        elif context == "parcel":
            err = InvalidParcel
        else:
            err = BindleInvalidRequest
    elif status == 403:
        err = Yanked
    elif status == 404:
        is_parcel = context == "parcel" and not message.lower().startswith("bindle")
        err = ParcelNotFound if is_parcel else InvoiceNotFound
    elif status == 409:
        err = AlreadyExists
    elif status == 422:
        err = CreateYanked
    elif status >= 500:
        err = BindleServerError
    else:
        err = BindleError
    raise err(message, **details)


def _decode_body(response: httpx.Response, type_: type[T]) -> T:
    return decode(response.content, type_, content_type=response.headers.get("content-type"),
                  error=BindleServerError)


def _query_params(term: str | None, version: str | None, offset: int | None, limit: int | None,
                  strict: bool | None, yanked: bool | None) -> dict[str, str]:
    # The long names, as the Rust client sends them.
    params: dict[str, str] = {}
    for key, value in (("query", term), ("version", version), ("offset", offset),
                       ("limit", limit), ("strict", strict), ("yanked", yanked)):
        if value is not None:
            params[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return params


def _invoice_body(invoice: Invoice | str | bytes) -> bytes:
    if isinstance(invoice, Invoice):
        return to_toml(invoice).encode()
    return invoice.encode() if isinstance(invoice, str) else invoice


def _upload_headers(data: ParcelData) -> dict[str, str]:
    size = len(data) if isinstance(data, bytes) else os.stat(data).st_size
    return {"Content-Type": "application/octet-stream", "Content-Length": str(size)}


def _same_parcels(a: Invoice, b: Invoice) -> bool:
    return sorted(p.label.sha256 for p in a.parcels) == sorted(p.label.sha256 for p in b.parcels)


def _has_creator(invoice: Invoice) -> bool:
    return any(sig.role == SignatureRole.CREATOR for sig in invoice.signature or ())


def _parcel_files(invoice: Invoice, directory: Path) -> dict[str, Path]:
    """label sha256 → the file in ``directory`` named like the label (never outside it)."""
    root = directory.resolve()
    files = {}
    for parcel in invoice.parcels:
        path = (root / parcel.label.name).resolve()
        if not path.is_relative_to(root):
            raise InvalidInvoice(f"parcel name {parcel.label.name!r} points outside {directory}")
        files[parcel.label.sha256] = path
    return files


def load_invoice_dir(directory: str | os.PathLike[str]) -> tuple[Invoice, dict[str, Path]]:
    """A push directory: ``invoice.toml`` plus each parcel's file under its label name."""
    directory = Path(directory)
    invoice = decode((directory / "invoice.toml").read_bytes(), Invoice)
    return invoice, _parcel_files(invoice, directory)


def _not_pushed(label: Label) -> BindleError:
    return ParcelNotFound(f"no data given for parcel {label.name} ({label.sha256})",
                          sha256=label.sha256)


class _Verifier:
    """Hashes a download as it streams; ``check`` raises if it is not the parcel asked for."""

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        self.digest = hashlib.sha256()

    def update(self, chunk: bytes) -> bytes:
        self.digest.update(chunk)
        return chunk

    def check(self) -> None:
        got = self.digest.hexdigest()
        if got != self.sha256:
            raise ParcelCorrupt(f"parcel {self.sha256} downloaded with digest {got}",
                                sha256=self.sha256)


def _healthz_url(base_url: str) -> httpx.URL:
    return httpx.URL(base_url).join("/healthz")


def _tmp_for(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.part")


# -- asyncio client ----------------------------------------------------------------------------


async def _file_chunks(path: str | os.PathLike[str]) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
            yield chunk


class AsyncClient:
    """A Bindle client. Use as an async context manager, or call :meth:`aclose`."""

    def __init__(self, base_url: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers=dict(headers or {}), transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, context: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BindleUnavailable(f"bindle server {self.base_url}: {exc}") from exc
        _raise_for(response, context)
        return response

    async def healthy(self) -> bool:
        try:
            r = await self._http.get(_healthz_url(self.base_url))
        except httpx.TransportError:
            return False
        return r.is_success

    async def create_invoice(self, invoice: Invoice | str | bytes) -> InvoiceCreateResponse:
        r = await self._send("POST", "_i", "create", content=_invoice_body(invoice),
                             headers={"Content-Type": TOML_MIME})
        return _decode_body(r, InvoiceCreateResponse)

    async def get_invoice(self, bindle_id: str, *, yanked: bool = False) -> Invoice:
        params = {"yanked": "true"} if yanked else None
        r = await self._send("GET", _invoice_path(bindle_id), "invoice", params=params)
        return _decode_body(r, Invoice)

    async def invoice_exists(self, bindle_id: str) -> bool:
        try:
            await self._send("HEAD", _invoice_path(bindle_id), "invoice",
                             params={"yanked": "true"})
        except InvoiceNotFound:
            return False
        return True

    async def yank_invoice(self, bindle_id: str) -> None:
        await self._send("DELETE", _invoice_path(bindle_id), "invoice")

    async def missing_parcels(self, bindle_id: str) -> list[Label]:
        r = await self._send("GET", "_r/missing/" + quote(bindle_id, safe="/"), "invoice")
        return _decode_body(r, MissingParcelsResponse).missing

    async def query(self, term: str | None = None, version: str | None = None, *,
                    offset: int | None = None, limit: int | None = None,
                    strict: bool | None = None, yanked: bool | None = None) -> Matches:
        params = _query_params(term, version, offset, limit, strict, yanked)
        return _decode_body(await self._send("GET", "_q", "query", params=params), Matches)

    async def create_parcel(self, bindle_id: str, sha256: str, data: ParcelData) -> None:
        """Upload one parcel: bytes, or a path streamed from disk."""
        headers = _upload_headers(data)
        content = data if isinstance(data, bytes) else _file_chunks(data)
        await self._send("POST", _parcel_path(bindle_id, sha256), "parcel", content=content,
                         headers=headers)

    @contextlib.asynccontextmanager
    async def stream_parcel(self, bindle_id: str, sha256: str,
                            chunk_size: int = CHUNK_SIZE) -> AsyncIterator[AsyncIterator[bytes]]:
        """``async with client.stream_parcel(id, sha) as chunks:`` — the digest is checked at the end."""
        try:
            async with self._http.stream("GET", _parcel_path(bindle_id, sha256)) as response:
                if response.is_error:
                    await response.aread()
                    _raise_for(response, "parcel")
                verifier = _Verifier(sha256)

                async def chunks() -> AsyncIterator[bytes]:
                    async for chunk in response.aiter_bytes(chunk_size):
                        yield verifier.update(chunk)
                    verifier.check()

                yield chunks()
        except httpx.TransportError as exc:
            raise BindleUnavailable(f"bindle server {self.base_url}: {exc}") from exc

    async def get_parcel(self, bindle_id: str, sha256: str) -> bytes:
        async with self.stream_parcel(bindle_id, sha256) as chunks:
            return b"".join([chunk async for chunk in chunks])

    async def download_parcel(self, bindle_id: str, sha256: str,
                              dest: str | os.PathLike[str]) -> Path:
        """Stream a parcel to ``dest``; it appears only once complete and verified."""
        dest = Path(dest)
        tmp = _tmp_for(dest)
        try:
            async with self.stream_parcel(bindle_id, sha256) as chunks:
                with open(tmp, "wb") as f:
                    async for chunk in chunks:
                        await asyncio.to_thread(f.write, chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    async def host_keys(self) -> KeyRing:
        """The server's host keys (``/bindle-keys``, the reference's keyring protocol)."""
        r = await self._send("GET", "bindle-keys", "keys", params={"roles": "host"})
        return _decode_body(r, KeyRing)

    async def push(self, invoice: Invoice, files: Mapping[str, ParcelData], *,
                   creator: KeyPair | None = None) -> PushResult:
        """Create ``invoice`` unless the same one is there, then upload what is missing.

        ``files`` maps each parcel's sha256 to its bytes or path; ``creator`` signs the invoice
        first. Pushing twice is a no-op.
        """
        if creator is not None:
            invoice = sign_with_nkey(invoice, creator)
        result = PushResult(invoice.id, invoice_created=True)
        try:
            missing = (await self.create_invoice(invoice)).missing or []
        except AlreadyExists:
            existing = await self.get_invoice(invoice.id)
            if not _same_parcels(existing, invoice):
                raise AlreadyExists(f"{invoice.id} exists with other parcels; bump the version") from None
            if creator is not None and not _has_creator(existing):
                raise SignatureInvalid(
                    f"{invoice.id} is already stored without a creator signature (pushed before "
                    "models were signed?); bump its version, or delete it from the server's store"
                ) from None
            result.invoice_created = False
            missing = await self.missing_parcels(invoice.id)
        missing_shas = {label.sha256 for label in missing}
        for parcel in invoice.parcels:
            label = parcel.label
            if label.sha256 not in missing_shas:
                result.already_stored.append(label)
                continue
            if label.sha256 not in files:
                raise _not_pushed(label)
            try:
                await self.create_parcel(invoice.id, label.sha256, files[label.sha256])
                result.uploaded.append(label)
            except AlreadyExists:  # another pusher won the race; the parcel is there
                result.already_stored.append(label)
            missing_shas.discard(label.sha256)
        return result

    async def push_dir(self, directory: str | os.PathLike[str], *,
                       creator: KeyPair | None = None) -> PushResult:
        invoice, files = load_invoice_dir(directory)
        return await self.push(invoice, files, creator=creator)


__all__ = ["AsyncClient", "PushResult", "load_invoice_dir"]
