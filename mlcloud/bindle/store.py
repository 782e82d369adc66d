"""Files on disk behind the Bindle server: invoices by canonical id, parcels once by sha256.

Layout (the reference's file provider, so a directory can move between the two)::

    DIR/invoices/{sha256(name/version)}/invoice.toml
    DIR/parcels/{sha256}/label.toml
    DIR/parcels/{sha256}/parcel.dat
    DIR/tmp/                       uploads in flight; emptied at start-up
    DIR/host.nk                    the server's host signing key (mlcloud.bindle.server)

Every file appears whole or not at all: it is written to ``tmp/``, flushed, then linked or renamed
into place. Creation uses ``os.link`` because it fails when the target exists, which makes
"create unless already there" one atomic step even between concurrent uploads of the same parcel.
A crash mid-upload therefore leaves only a temp file, which the next start removes.

Invoices are immutable; yanking rewrites ``invoice.toml`` with ``yanked = true`` (an atomic
replace). An in-memory index of every invoice answers queries; it is rebuilt from disk at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO

import msgspec
import semver

from mlcloud.bindle.errors import (
    AlreadyExists,
    BindleInvalidRequest,
    CreateYanked,
    InvalidParcel,
    InvoiceNotFound,
    ParcelNotFound,
    Yanked,
)
from mlcloud.bindle.models import (
    BINDLE_VERSION_1,
    Invoice,
    Label,
    Matches,
    canonical_id,
    decode,
    to_toml,
)
from mlcloud.bindle.versions import version_matches

log = logging.getLogger(__name__)

MAX_QUERY_LIMIT = 255  # the reference's limit is a u8
DEFAULT_QUERY_LIMIT = 50


def _write_tmp(tmp_dir: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(name)


class BindleStore:
    """Invoices and parcels under one directory, safe for one server process."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.invoices_dir = self.directory / "invoices"
        self.parcels_dir = self.directory / "parcels"
        self.tmp_dir = self.directory / "tmp"
        self._index: dict[str, Invoice] = {}

    def open(self) -> BindleStore:
        for d in (self.invoices_dir, self.parcels_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            # Whatever is here was in flight when a previous server died.
            with contextlib.suppress(OSError):
                leftover.unlink()
        self._index.clear()
        for path in sorted(self.invoices_dir.glob("*/invoice.toml")):
            try:
                invoice = decode(path.read_bytes(), Invoice)
            except Exception:  # one unreadable file must not take the whole store down
                log.exception("skipping unreadable invoice %s", path)
                continue
            self._index[invoice.canonical_id] = invoice
        log.info("bindle store %s: %d invoices", self.directory, len(self._index))
        return self

    # -- invoices ---------------------------------------------------------------------------

    def _invoice_path(self, cid: str) -> Path:
        return self.invoices_dir / cid / "invoice.toml"

    def _place(self, data: bytes, target: Path, *, replace: bool) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(self.tmp_dir, data)
        try:
            if replace:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)  # FileExistsError when someone else was first
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def create_invoice(self, invoice: Invoice) -> list[Label]:
        """Store a new invoice; return the labels of the parcels not stored yet."""
        if invoice.yanked:
            raise CreateYanked("cannot create an invoice that is already yanked")
        if invoice.bindle_version != BINDLE_VERSION_1:
            raise BindleInvalidRequest(f"unsupported bindleVersion {invoice.bindle_version!r}")
        cid = invoice.canonical_id
        if cid in self._index:
            raise AlreadyExists(f"invoice {invoice.id} already exists", bindle_id=invoice.id)
        try:
            self._place(to_toml(invoice).encode(), self._invoice_path(cid), replace=False)
        except FileExistsError as exc:
            raise AlreadyExists(f"invoice {invoice.id} already exists", bindle_id=invoice.id) from exc
        self._index[cid] = invoice
        return self.missing_parcels(invoice)

    def get_invoice(self, name: str, version: str, *, yanked: bool = False) -> Invoice:
        invoice = self._index.get(canonical_id(name, version))
        if invoice is None:
            raise InvoiceNotFound(f"bindle {name}/{version} not found", bindle_id=f"{name}/{version}")
        if invoice.yanked and not yanked:
            raise Yanked(f"bindle {name}/{version} is yanked", bindle_id=f"{name}/{version}")
        return invoice

    def yank_invoice(self, name: str, version: str) -> Invoice:
        invoice = self.get_invoice(name, version, yanked=True)
        if invoice.yanked:
            return invoice
        yanked = msgspec.structs.replace(invoice, yanked=True)
        self._place(to_toml(yanked).encode(), self._invoice_path(invoice.canonical_id), replace=True)
        self._index[invoice.canonical_id] = yanked
        return yanked

    # -- parcels ----------------------------------------------------------------------------

    def parcel_path(self, sha256: str) -> Path:
        return self.parcels_dir / sha256 / "parcel.dat"

    def parcel_exists(self, sha256: str) -> bool:
        return self.parcel_path(sha256).is_file()

    def missing_parcels(self, invoice: Invoice) -> list[Label]:
        seen: set[str] = set()
        missing = []
        for parcel in invoice.parcel or ():
            sha = parcel.label.sha256
            if sha not in seen and not self.parcel_exists(sha):
                missing.append(parcel.label)
            seen.add(sha)
        return missing

    def open_parcel(self, sha256: str) -> Path:
        path = self.parcel_path(sha256)
        if not path.is_file():
            raise ParcelNotFound(f"parcel {sha256} not found", sha256=sha256)
        return path

    async def write_parcel(self, label: Label, chunks: AsyncIterable[bytes]) -> None:
        """Stream ``chunks`` into the store, checking size and digest against ``label``.

        Nothing is kept in memory beyond one chunk. The file appears under its digest only once
        it is complete and verified; a concurrent upload that finishes second gets AlreadyExists.
        """
        sha = label.sha256
        if self.parcel_exists(sha):
            raise AlreadyExists(f"parcel {sha} already exists", sha256=sha)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{sha[:12]}-")
        tmp = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > label.size:
                        raise InvalidParcel(
                            f"parcel {sha} is larger than its label's size {label.size}", sha256=sha)
                    # hashlib and file writes release the GIL, so big chunks leave the loop free.
                    await asyncio.to_thread(_hash_and_write, digest, f, chunk)
                if size != label.size:
                    raise InvalidParcel(
                        f"parcel {sha} is {size} bytes, its label says {label.size}", sha256=sha)
                if digest.hexdigest() != sha:
                    raise InvalidParcel(
                        f"parcel digest {digest.hexdigest()} does not match {sha}", sha256=sha)
                await asyncio.to_thread(_flush_and_sync, f)
            target = self.parcel_path(sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            label_path = target.parent / "label.toml"
            if not label_path.exists():
                self._place(to_toml(label).encode(), label_path, replace=True)
            try:
                os.link(tmp, target)
            except FileExistsError as exc:
                raise AlreadyExists(f"parcel {sha} already exists", sha256=sha) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    # -- queries ----------------------------------------------------------------------------

    def query(self, term: str = "", version: str = "", *, offset: int = 0,
              limit: int = DEFAULT_QUERY_LIMIT, strict: bool = False,
              yanked: bool = False) -> Matches:
        """Invoices whose name contains ``term`` (equals it when ``strict``), in a stable order."""
        found = [
            inv for inv in self._index.values()
            if (yanked or not inv.yanked)
            and ((inv.name == term) if strict and term else term in inv.name)
            and version_matches(inv.version, version)
        ]
        found.sort(key=lambda inv: (inv.name, semver.Version.parse(inv.version)))
        page = found[offset:offset + limit]
        return Matches(query=term, strict=strict, offset=offset, limit=limit, total=len(found),
                       more=offset + len(page) < len(found), yanked=yanked, invoices=page)


def _hash_and_write(digest: hashlib._Hash, f: BinaryIO, chunk: bytes) -> None:
    digest.update(chunk)
    f.write(chunk)


def _flush_and_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
