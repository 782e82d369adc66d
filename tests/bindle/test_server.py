"""The Bindle v1 API against the real server: the lifecycle and every status it answers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tomllib

import httpx
import pytest

from mlcloud.bindle import AlreadyExists, AsyncClient, InvoiceNotFound, Yanked
from mlcloud.bindle.models import to_toml
from mlcloud.testing.bindle import BindleServerProcess

from .conftest import Bindle, make_bindle, unsigned

TOML = {"Content-Type": "application/toml"}


def _error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/toml")
    return tomllib.loads(response.text)["error"]


@pytest.fixture
def http(server: BindleServerProcess):
    with httpx.Client(base_url=server.url + "/") as client:
        yield client


def _post_invoice(http: httpx.Client, bindle: Bindle) -> httpx.Response:
    return http.post("_i", content=to_toml(bindle.invoice), headers=TOML)


async def test_whole_lifecycle(server: BindleServerProcess) -> None:
    b = make_bindle({"model.onnx": os.urandom(5000), "meta.json": b'{"a": 1}'})
    model, meta = b.sha("model.onnx"), b.sha("meta.json")
    async with AsyncClient(server.url) as client:
        created = await client.create_invoice(b.invoice)
        assert unsigned(created.invoice) == b.invoice
        assert {label.sha256 for label in created.missing} == {model, meta}
        assert {m.sha256 for m in await client.missing_parcels(b.id)} == {model, meta}

        await client.create_parcel(b.id, model, b.data[model])
        assert [m.sha256 for m in await client.missing_parcels(b.id)] == [meta]
        await client.create_parcel(b.id, meta, b.data[meta])
        assert await client.missing_parcels(b.id) == []

        assert await client.get_parcel(b.id, model) == b.data[model]
        assert await client.get_invoice(b.id) == created.invoice
        found = await client.query(b.invoice.name)
        assert [inv.id for inv in found.invoices] == [b.id]

        await client.yank_invoice(b.id)
        with pytest.raises(Yanked):
            await client.get_invoice(b.id)
        with pytest.raises(Yanked):
            await client.get_parcel(b.id, model)
        assert (await client.get_invoice(b.id, yanked=True)).yanked is True
        assert (await client.query(b.invoice.name)).invoices == []
        assert (await client.query(b.invoice.name, yanked=True)).total == 1


def test_create_answers_201_when_every_parcel_is_already_stored(http: httpx.Client) -> None:
    shared = os.urandom(100)
    first = make_bindle({"shared.bin": shared})
    assert _post_invoice(http, first).status_code == 202
    r = http.post(f"_i/{first.id}@{first.sha('shared.bin')}", content=shared)
    assert r.status_code == 200 and tomllib.loads(r.text) == {"message": "parcel created"}

    # A second bindle naming the same bytes needs no upload: parcels are stored once by sha256.
    second = make_bindle({"renamed.bin": shared})
    r = _post_invoice(http, second)
    assert r.status_code == 201
    assert "missing" not in tomllib.loads(r.text)
    r = http.post(f"_i/{second.id}@{second.sha('renamed.bin')}", content=shared)
    assert r.status_code == 409


def test_invoice_create_errors(http: httpx.Client) -> None:
    b = make_bindle({"x": b"x"})
    body = to_toml(b.invoice)
    assert _post_invoice(http, b).status_code == 202
    r = _post_invoice(http, b)
    assert r.status_code == 409 and "already exists" in _error(r)

    cases = {
        "unparseable": "this is [not toml",
        "not strict semver": body.replace('version = "1.0.0"', 'version = "1.0"'),
        "unknown field": body + '\nsurprise = "!"\n',
        "missing bindleVersion": body.replace('bindleVersion = "1.0.0"', ""),
    }
    for what, text in cases.items():
        r = http.post("_i", content=text, headers=TOML)
        assert r.status_code == 400, what
        assert _error(r), what

    yanked = make_bindle({"y": b"y"})
    r = http.post("_i", content=to_toml(yanked.invoice).replace(
        'bindleVersion = "1.0.0"', 'bindleVersion = "1.0.0"\nyanked = true'), headers=TOML)
    assert r.status_code == 422

    # JSON bodies are accepted too, and a yanked bindle's id stays taken.
    j = make_bindle({"j": b"j"})
    r = http.post("_i", content=j.invoice.to_json(), headers={"Content-Type": "application/json"})
    assert r.status_code == 202
    assert http.delete(f"_i/{j.id}").status_code == 200
    assert http.post("_i", content=j.invoice.to_json(),
                     headers={"Content-Type": "application/json"}).status_code == 409


def test_invoice_read_errors(http: httpx.Client) -> None:
    b = make_bindle({"x": b"x"})
    assert _post_invoice(http, b).status_code == 202
    assert http.get(f"_i/{b.id}").status_code == 200
    assert http.head(f"_i/{b.id}").status_code == 200
    assert http.get("_i/no/such/1.0.0").status_code == 404
    assert http.head("_i/no/such/1.0.0").status_code == 404
    assert http.delete("_i/no/such/1.0.0").status_code == 404
    assert http.get("_i/no/such/1.0").status_code == 400
    assert http.get("_i/onlyname").status_code == 400
    assert http.put(f"_i/{b.id}").status_code == 405

    assert http.delete(f"_i/{b.id}").status_code == 200
    r = http.get(f"_i/{b.id}")
    assert r.status_code == 403 and "yanked" in _error(r)
    assert http.head(f"_i/{b.id}").status_code == 403
    assert http.get(f"_i/{b.id}", params={"yanked": "true"}).status_code == 200
    assert http.head(f"_i/{b.id}", params={"yanked": "true"}).status_code == 200
    assert http.get(f"_r/missing/{b.id}").status_code == 403
    assert http.get("_r/missing/no/such/1.0.0").status_code == 404


def test_bodies_are_json_when_accept_asks_but_errors_stay_toml(http: httpx.Client) -> None:
    b = make_bindle({"x": b"x"})
    r = http.post("_i", content=to_toml(b.invoice),
                  headers={**TOML, "Accept": "text/json, application/toml;q=0.9"})
    assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    assert r.json()["missing"][0]["sha256"] == b.sha("x")
    # The reference server renders every error as TOML whatever Accept says; clients expect that.
    r = http.get("_i/no/such/1.0.0", headers={"Accept": "application/json"})
    assert r.status_code == 404 and _error(r) == "bindle no/such/1.0.0 not found"
    r = http.delete(f"_i/{b.id}@{b.sha('x')}", headers={"Accept": "application/json"})
    assert r.status_code == 405 and _error(r) == "Method Not Allowed"
    assert r.headers["Allow"] == "GET,HEAD,POST"
    r = http.get(f"_i/{b.id}", headers={"Accept": "application/toml"})
    assert tomllib.loads(r.text)["bindle"]["name"] == b.invoice.name


def test_parcel_errors(http: httpx.Client) -> None:
    data = os.urandom(1000)
    b = make_bindle({"p.bin": data, "q.txt": b"hello"}, media_type="text/plain")
    sha = b.sha("p.bin")
    assert _post_invoice(http, b).status_code == 202

    other = hashlib.sha256(b"not in this bindle").hexdigest()
    r = http.post(f"_i/{b.id}@{other}", content=b"not in this bindle")
    assert r.status_code == 400 and "does not exist in invoice" in _error(r)
    r = http.post(f"_i/{b.id}@{sha}", content=data[:-1])
    assert r.status_code == 400 and "bytes" in _error(r)
    r = http.post(f"_i/{b.id}@{sha}", content=os.urandom(1000))
    assert r.status_code == 400 and "digest" in _error(r)
    # Without a Content-Length the server finds out while streaming.
    r = http.post(f"_i/{b.id}@{sha}", content=iter([data, b"extra"]))
    assert r.status_code == 400
    r = http.post(f"_i/{b.id}@{sha}", content=iter([os.urandom(1000)]))
    assert r.status_code == 400
    assert http.post(f"_i/{b.id}@not-a-sha", content=b"x").status_code == 400
    assert http.post(f"_i/no/such/1.0.0@{sha}", content=data).status_code == 404
    assert http.get(f"_i/{b.id}@{sha}").status_code == 404  # not uploaded yet
    assert http.get(f"_i/{b.id}@{other}").status_code == 400
    assert http.delete(f"_i/{b.id}@{sha}").status_code == 405

    assert http.post(f"_i/{b.id}@{sha}", content=iter([data[:10], data[10:]])).status_code == 200
    assert http.post(f"_i/{b.id}@{sha}", content=data).status_code == 409
    r = http.get(f"_i/{b.id}@{sha}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "1000"
    r = http.head(f"_i/{b.id}@{sha}")
    assert r.status_code == 200 and r.headers["content-length"] == "1000" and not r.content

    assert http.delete(f"_i/{b.id}").status_code == 200
    q = b.sha("q.txt")
    assert http.post(f"_i/{b.id}@{q}", content=b"hello").status_code == 403
    assert http.get(f"_i/{b.id}@{sha}").status_code == 403


def test_query(http: httpx.Client) -> None:
    prefix = f"q{os.urandom(4).hex()}"
    for version in ("0.1.0", "0.2.0", "1.0.0", "1.1.0-rc.1"):
        assert _post_invoice(http, make_bindle({}, name=f"{prefix}/model", version=version)
                             ).status_code == 201
    assert _post_invoice(http, make_bindle({}, name=f"{prefix}/model-extra")).status_code == 201

    def q(**params):
        r = http.get("_q", params=params)
        assert r.status_code == 200, r.text
        found = tomllib.loads(r.text)
        return found, [f"{i['bindle']['name']}/{i['bindle']['version']}"
                       for i in found.get("invoices", [])]

    found, ids = q(q=prefix)
    assert found["total"] == 5 and found["limit"] == 50 and found["more"] is False
    # Ordered by name, then by SemVer precedence (not as strings).
    assert ids == [f"{prefix}/model/{v}" for v in ("0.1.0", "0.2.0", "1.0.0", "1.1.0-rc.1")] + [
        f"{prefix}/model-extra/1.0.0"]
    found, ids = q(query=prefix, limit=2, offset=1)
    assert len(ids) == 2 and found["more"] is True and found["offset"] == 1
    found, ids = q(q=prefix, l=2, o=4)
    assert len(ids) == 1 and found["more"] is False
    _, ids = q(q=f"{prefix}/model", v="^0.1")
    assert ids == [f"{prefix}/model/0.1.0"]
    _, ids = q(q=f"{prefix}/model", version=">=1.0.0")
    assert f"{prefix}/model/1.0.0" in ids and f"{prefix}/model/0.2.0" not in ids
    _, ids = q(q=f"{prefix}/model", strict="true")
    assert len(ids) == 4
    _, ids = q(q=prefix, v="not a range")
    assert ids == []

    assert http.delete(f"_i/{prefix}/model/0.1.0").status_code == 200
    assert q(q=prefix)[0]["total"] == 4
    assert q(q=prefix, yanked="true")[0]["total"] == 5

    for bad in ({"limit": "256"}, {"l": "-1"}, {"offset": "x"}, {"colour": "red"},
                {"q": "a", "query": "b"}, {"strict": "yes"}):
        r = http.get("_q", params=bad)
        assert r.status_code == 400, bad
        assert _error(r)


async def test_concurrent_uploads_of_the_same_parcel(server: BindleServerProcess) -> None:
    data = os.urandom(8 * 1024 * 1024)
    b = make_bindle({"big.bin": data})
    sha = b.sha("big.bin")
    async with AsyncClient(server.url) as client:
        await client.create_invoice(b.invoice)

        async def upload() -> str:
            try:
                await client.create_parcel(b.id, sha, data)
            except AlreadyExists:
                return "exists"
            return "created"

        outcomes = await asyncio.gather(*(upload() for _ in range(8)))
        assert sorted(outcomes) == ["created"] + ["exists"] * 7
        assert await client.get_parcel(b.id, sha) == data
    assert list((server.directory / "tmp").iterdir()) == []


async def test_restart_keeps_everything(fresh_server: BindleServerProcess) -> None:
    kept = make_bindle({"a.bin": os.urandom(3000)})
    yanked = make_bindle({"b.bin": os.urandom(10)})
    async with AsyncClient(fresh_server.url) as client:
        await client.push(kept.invoice, kept.data)
        await client.create_invoice(yanked.invoice)
        await client.yank_invoice(yanked.id)
        stored = await client.get_invoice(kept.id)
        await fresh_server.arestart()
        assert await client.get_invoice(kept.id) == stored and unsigned(stored) == kept.invoice
        assert await client.get_parcel(kept.id, kept.sha("a.bin")) == kept.data[kept.sha("a.bin")]
        assert await client.missing_parcels(kept.id) == []
        with pytest.raises(Yanked):
            await client.get_invoice(yanked.id)
        assert (await client.query(kept.invoice.name)).total == 1
        assert (await client.query(yanked.invoice.name, yanked=True)).total == 1
        with pytest.raises(InvoiceNotFound):
            await client.get_invoice("never/pushed/1.0.0")


async def test_a_killed_upload_leaves_no_partial_parcel(fresh_server: BindleServerProcess) -> None:
    data = os.urandom(4 * 1024 * 1024)
    b = make_bindle({"half.bin": data})
    sha = b.sha("half.bin")
    sent_half = asyncio.Event()

    async def body():
        yield data[: len(data) // 2]
        sent_half.set()
        await asyncio.sleep(30)  # never finishes: the server dies first
        yield data[len(data) // 2:]

    async with AsyncClient(fresh_server.url) as client:
        await client.create_invoice(b.invoice)
        upload = asyncio.create_task(client._http.post(
            f"_i/{b.id}@{sha}", content=body(), headers={"Content-Length": str(len(data))}))
        await sent_half.wait()
        await asyncio.sleep(0.3)
        assert list((fresh_server.directory / "tmp").iterdir()), "upload should be in flight"
        fresh_server.process.kill()
        fresh_server.process.wait()
        upload.cancel()
        with pytest.raises((asyncio.CancelledError, httpx.TransportError)):
            await upload
        await fresh_server.arestart()
        assert [m.sha256 for m in await client.missing_parcels(b.id)] == [sha]
        assert list((fresh_server.directory / "tmp").iterdir()) == []
        assert not (fresh_server.directory / "parcels" / sha / "parcel.dat").exists()
        await client.create_parcel(b.id, sha, data)
        assert await client.get_parcel(b.id, sha) == data
