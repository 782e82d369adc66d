"""Fixtures for the Bindle suite: a real server subprocess on a free port, and bindle builders."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from mlcloud.bindle import BindleSpec, Invoice, Label, Parcel
from mlcloud.testing.bindle import BindleServerProcess


@dataclass
class Bindle:
    """An invoice plus the bytes of each of its parcels, keyed by sha256."""

    invoice: Invoice
    data: dict[str, bytes]

    @property
    def id(self) -> str:
        return self.invoice.id

    def sha(self, name: str) -> str:
        return next(p.label.sha256 for p in self.invoice.parcels if p.label.name == name)


def make_bindle(parcels: dict[str, bytes], *, name: str | None = None, version: str = "1.0.0",
                media_type: str = "application/octet-stream") -> Bindle:
    labels = [Label(sha256=hashlib.sha256(data).hexdigest(), name=parcel_name, size=len(data),
                    media_type=media_type) for parcel_name, data in parcels.items()]
    invoice = Invoice(
        bindle_version="1.0.0",
        bindle=BindleSpec(name=name or f"test/{uuid.uuid4().hex[:10]}", version=version),
        parcel=[Parcel(label=label) for label in labels] or None,
    )
    return Bindle(invoice, {label.sha256: data for label, data in zip(labels, parcels.values(), strict=True)})


def unsigned(invoice: Invoice) -> Invoice:
    """The invoice as pushed, without the host signature the server adds to what it stores."""
    return msgspec.structs.replace(invoice, signature=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindleServerProcess]:
    """One server per module; tests use their own bindle names so they do not collide."""
    with BindleServerProcess(tmp_path_factory.mktemp("bindle")) as srv:
        yield srv


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[BindleServerProcess]:
    """A server of this test's own, for tests that restart or kill it."""
    with BindleServerProcess(tmp_path / "store") as srv:
        yield srv
