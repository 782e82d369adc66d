"""The clients' typed errors, digest checks and idempotent push, against the real server."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from mlcloud.bindle import (
    AlreadyExists,
    AsyncClient,
    BindleError,
    BindleInvalidRequest,
    BindleUnavailable,
    CreateYanked,
    InvalidInvoice,
    InvalidParcel,
    InvoiceNotFound,
    ParcelCorrupt,
    ParcelNotFound,
    Yanked,
)
from mlcloud.bindle.models import to_toml
from mlcloud.errors import MLCloudError, error_from_wire
from mlcloud.servers import free_port
from mlcloud.testing.bindle import BindleServerProcess

from .conftest import make_bindle


async def test_typed_errors(server: BindleServerProcess) -> None:
    b = make_bindle({"p.bin": os.urandom(100)})
    sha = b.sha("p.bin")
    async with AsyncClient(server.url) as client:
        await client.create_invoice(b.invoice)
        with pytest.raises(AlreadyExists):
            await client.create_invoice(b.invoice)
        with pytest.raises(InvalidInvoice):
            await client.create_invoice(to_toml(b.invoice).replace("1.0.0", "1.0"))
        with pytest.raises(CreateYanked):
            await client.create_invoice("yanked = true\n" + to_toml(make_bindle({}).invoice))
        with pytest.raises(InvoiceNotFound):
            await client.get_invoice("nobody/1.0.0")
        with pytest.raises(InvoiceNotFound):
            await client.missing_parcels("nobody/1.0.0")
        with pytest.raises(BindleInvalidRequest):
            await client.get_invoice("nobody/1.0")
        with pytest.raises(BindleInvalidRequest):
            await client.query(limit=300)
        with pytest.raises(ParcelNotFound):
            await client.get_parcel(b.id, sha)  # in the invoice, not uploaded yet
        with pytest.raises(InvoiceNotFound):
            await client.get_parcel("nobody/1.0.0", sha)
        with pytest.raises(InvalidParcel):
            await client.create_parcel(b.id, sha, os.urandom(100))
        with pytest.raises(InvalidParcel):
            await client.create_parcel(b.id, "0" * 64, b"x")
        await client.create_parcel(b.id, sha, b.data[sha])
        with pytest.raises(AlreadyExists) as exists:
            await client.create_parcel(b.id, sha, b.data[sha])
        await client.yank_invoice(b.id)
        with pytest.raises(Yanked):
            await client.get_parcel(b.id, sha)
        with pytest.raises(Yanked):
            await client.missing_parcels(b.id)

    # One tree: every error is a BindleError and an MLCloudError, and crosses the lattice as itself.
    err = exists.value
    assert isinstance(err, BindleError) and isinstance(err, MLCloudError)
    assert err.http_status == 409 and err.details["status"] == 409
    assert type(error_from_wire(err.to_wire())) is AlreadyExists


async def test_errors_are_read_from_toml_even_when_json_was_asked(server: BindleServerProcess) -> None:
    async with AsyncClient(server.url, headers={"Accept": "application/json"}) as client:
        assert (await client.query("nobody")).total == 0  # JSON bodies for answers…
        with pytest.raises(InvoiceNotFound, match="^bindle nobody/1.0.0 not found$"):
            await client.get_invoice("nobody/1.0.0")  # …and the reference's TOML for errors


async def test_a_json_error_body_is_read_too() -> None:
    # Neither our server nor the reference sends one; a proxy in front of either might.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "bindle a/1.0.0 not found"})

    async with AsyncClient("http://bindle.invalid/v1", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(InvoiceNotFound, match="^bindle a/1.0.0 not found$"):
            await client.get_invoice("a/1.0.0")


async def test_unreachable_server_is_bindle_unavailable() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}/v1", timeout=2) as client:
        assert not await client.healthy()
        with pytest.raises(BindleUnavailable):
            await client.get_invoice("any/1.0.0")


async def test_corrupt_parcel_on_disk_is_caught_on_download(
    fresh_server: BindleServerProcess, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    b = make_bindle({"w.bin": data})
    sha = b.sha("w.bin")
    async with AsyncClient(fresh_server.url) as client:
        await client.push(b.invoice, b.data)
        stored = fresh_server.directory / "parcels" / sha / "parcel.dat"
        stored.write_bytes(os.urandom(len(data)))  # bit rot behind the server's back
        dest = tmp_path / "w.bin"
        with pytest.raises(ParcelCorrupt):
            await client.download_parcel(b.id, sha, dest)
        assert not dest.exists() and list(tmp_path.glob(".w.bin*")) == []
        with pytest.raises(ParcelCorrupt):
            await client.get_parcel(b.id, sha)


async def test_push_is_idempotent_and_refuses_a_different_invoice(
    server: BindleServerProcess, tmp_path: Path
) -> None:
    b = make_bindle({"a.bin": os.urandom(1000), "b.json": b"{}"})
    async with AsyncClient(server.url) as client:
        first = await client.push(b.invoice, b.data)
        assert first.invoice_created and len(first.uploaded) == 2
        again = await client.push(b.invoice, b.data)
        assert again.nothing_to_do and len(again.already_stored) == 2

        changed = make_bindle({"c.bin": b"c"}, name=b.invoice.name)
        with pytest.raises(AlreadyExists, match="other parcels"):
            await client.push(changed.invoice, changed.data)

        # A bindle whose invoice got in but whose parcels did not is completed by a re-push.
        partial = make_bindle({"x.bin": os.urandom(10), "y.bin": os.urandom(10)})
        await client.create_invoice(partial.invoice)
        await client.create_parcel(partial.id, partial.sha("x.bin"), partial.data[partial.sha("x.bin")])
        path = tmp_path / "y.bin"
        path.write_bytes(partial.data[partial.sha("y.bin")])
        done = await client.push(partial.invoice, {partial.sha("y.bin"): path})
        assert not done.invoice_created and [label.name for label in done.uploaded] == ["y.bin"]
        assert await client.missing_parcels(partial.id) == []


async def test_async_client_streams_and_pushes_dirs(
    server: BindleServerProcess, tmp_path: Path
) -> None:
    b = make_bindle({"model.onnx": os.urandom(3 * 1024 * 1024 + 7), "meta.json": os.urandom(8).hex().encode()})
    directory = tmp_path / "push"
    directory.mkdir()
    (directory / "invoice.toml").write_text(to_toml(b.invoice))
    for parcel in b.invoice.parcels:
        (directory / parcel.label.name).write_bytes(b.data[parcel.label.sha256])
    sha = b.sha("model.onnx")
    async with AsyncClient(server.url) as client:
        assert await client.healthy()
        assert not await client.invoice_exists(b.id)
        result = await client.push_dir(directory)
        assert result.invoice_created and len(result.uploaded) == 2
        assert (await client.push_dir(directory)).nothing_to_do
        assert await client.invoice_exists(b.id)

        received = bytearray()
        async with client.stream_parcel(b.id, sha, chunk_size=65536) as chunks:
            async for chunk in chunks:
                assert len(chunk) <= 65536
                received += chunk
        assert bytes(received) == b.data[sha]
        dest = await client.download_parcel(b.id, sha, tmp_path / "copy.onnx")
        assert dest.read_bytes() == b.data[sha]


async def test_push_dir_refuses_label_names_outside_the_directory(
    server: BindleServerProcess, tmp_path: Path
) -> None:
    b = make_bindle({"../escape.bin": b"x"})
    (tmp_path / "invoice.toml").write_text(to_toml(b.invoice))
    async with AsyncClient(server.url) as client:
        with pytest.raises(InvalidInvoice, match="outside"):
            await client.push_dir(tmp_path)
