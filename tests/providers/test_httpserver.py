"""The httpserver provider with a real host, a real actor and real HTTP: config from the link."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from mlcloud.host.host import Host
from mlcloud.interfaces import HTTPSERVER
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.servers import free_port
from tests.conftest import COMPONENTS, PROJECT

HTTPSERVER_DIR = str(PROJECT / "providers" / "httpserver")
ECHO_ACTOR = str(COMPONENTS / "httpecho")


@pytest.fixture
async def lattice(settings):
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        provider = (await ctl.start_provider(host.id, HTTPSERVER_DIR)).provider_id
        actor = (await ctl.start_actor(host.id, ECHO_ACTOR)).actor_id

        async def link(**values: str) -> str:
            port = free_port()
            await ctl.put_link(actor, provider, HTTPSERVER, values={"address": f"127.0.0.1:{port}", **values})
            return f"127.0.0.1:{port}"

        yield link
        await ctl.close()


async def wait_listening(url: str, **client_options) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=10, **client_options)
    async with asyncio.timeout(15):
        while True:
            try:
                await client.get("/")
                return client
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def test_request_reaches_the_actor_and_the_answer_comes_back(lattice):
    client = await wait_listening(f"http://{await lattice()}")
    response = await client.put("/some/path?x=1", content=b"hello", headers={"X-Thing": "yes"})
    assert response.status_code == 201 and response.headers["x-echo"] == "1"
    body = response.json()
    assert body["method"] == "PUT" and body["path"] == "/some/path" and body["query"] == "x=1"
    assert body["length"] == 5 and body["header"]["x-thing"] == "yes"
    await client.aclose()


async def test_body_limit_from_the_link_gives_413(lattice):
    client = await wait_listening(f"http://{await lattice(max_body_bytes='1000')}")
    assert (await client.post("/", content=b"x" * 1000)).status_code == 201
    response = await client.post("/", content=b"x" * 1001)
    assert response.status_code == 413 and response.json()["error"]["kind"] == "PayloadTooLarge"
    await client.aclose()


async def test_actor_timeout_gives_504_and_the_server_keeps_serving(lattice):
    client = await wait_listening(f"http://{await lattice(timeout='0.5')}")
    response = await client.get("/slow")
    assert response.status_code == 504 and response.json()["error"]["kind"] == "RpcTimeout"
    assert (await client.get("/fast")).status_code == 201
    await client.aclose()


async def test_cors_preflight_and_headers(lattice):
    client = await wait_listening(f"http://{await lattice(cors_allowed_origins='https://app.example')}")
    preflight = await client.options("/x", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    simple = await client.get("/x", headers={"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    other = await client.get("/x", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    await client.aclose()


async def test_tls_from_the_link(lattice, tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    address = await lattice(tls_cert_file=str(cert), tls_priv_key_file=str(key))
    client = await wait_listening(f"https://{address}", verify=ssl.create_default_context(cafile=str(cert)))
    response = await client.get("/secure")
    assert response.status_code == 201 and response.json()["path"] == "/secure"
    await client.aclose()
