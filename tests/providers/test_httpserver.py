"""The httpserver provider with a real host, a real actor and real HTTP: config from the link."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from mlcloud.host.host import Host
from mlcloud.interfaces import HTTPSERVER
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.servers import free_port
from mlcloud.settings import Settings
from tests.conftest import COMPONENTS, PROJECT

HTTPSERVER_DIR = str(PROJECT / "providers" / "httpserver")
ECHO_ACTOR = str(COMPONENTS / "httpecho")


@contextlib.asynccontextmanager
async def echo_behind_httpserver(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A host running the httpserver and the echo actor; yields a function that links them."""
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        provider = (await ctl.start_provider(host.id, HTTPSERVER_DIR)).provider_id
        actor = (await ctl.start_actor(host.id, ECHO_ACTOR)).actor_id

        async def link(address: str = "", **values: str) -> str:
            """Link the echo actor (again, when ``address`` is given) and return where it listens."""
            address = address or f"127.0.0.1:{free_port()}"
            await ctl.put_link(actor, provider, HTTPSERVER, values={"address": address, **values})
            return address

        yield link
        await ctl.close()


@pytest.fixture
async def lattice(settings):
    async with echo_behind_httpserver(settings) as link:
        yield link


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
    # Under /v2 the server's own errors take the Open Inference Protocol's body, a string.
    response = await client.post("/v2/models/m/infer", content=b"x" * 1001)
    assert response.status_code == 413 and "larger than the limit" in response.json()["error"]
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
    assert "Authorization" in preflight.headers["access-control-allow-headers"]  # for API keys
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


KEYS = {"api_keys": "k-every-path", "api_keys./plus3": "k-plus3, k-plus3-spare", "api_keys./identity": ""}


async def test_a_guarded_path_needs_its_api_key_and_the_actor_never_sees_it(lattice):
    client = await wait_listening(f"http://{await lattice(**KEYS)}")

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    missing = await client.put("/mobilenetv27/matches", content=b"image")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["kind"] == "Unauthorized"
    wrong = await client.put("/mobilenetv27/matches", content=b"image", headers=bearer("k-guess"))
    assert wrong.status_code == 401 and "k-guess" not in wrong.text
    assert (await client.get("/x", headers={"Authorization": "Basic k-every-path"})).status_code == 401
    right = await client.put("/mobilenetv27/matches", content=b"image", headers=bearer("k-every-path"))
    assert right.status_code == 201 and "authorization" not in right.json()["header"]

    # A path's own keys replace the keys of every path, matched by segment as the api routes.
    assert (await client.post("/plus3", headers=bearer("k-every-path"))).status_code == 401
    for key in ("k-plus3", "k-plus3-spare"):
        assert (await client.post("/plus3", headers=bearer(key))).status_code == 201
    assert (await client.post("/plus3//more", headers=bearer("k-every-path"))).status_code == 401
    assert (await client.post("/plus3x", headers=bearer("k-every-path"))).status_code == 201
    # An empty value leaves a path open; health probes are open unless a link guards them.
    assert (await client.post("/identity")).status_code == 201
    assert (await client.get("/v2/health/ready")).status_code == 201
    await client.aclose()


async def test_metrics_need_the_api_key_and_count_what_the_server_answered(lattice):
    from prometheus_client.parser import text_string_to_metric_families

    client = await wait_listening(f"http://{await lattice(api_keys='k-metrics')}")
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.put("/plus3", content=b"x")).status_code == 401
    key = {"Authorization": "Bearer k-metrics"}
    assert (await client.put("/plus3", content=b"x", headers=key)).status_code == 201
    response = await client.get("/metrics", headers=key)
    assert response.status_code == 200
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    # The echo actor names no model (no X-Model): the made-up route name is no label.
    counted = {s.labels["status"]: s.value for s in samples if s.name == "mlcloud_http_requests_total"
               and s.labels["route"] == "/{model}" and s.labels["model"] == ""}
    assert counted == {"401": 1, "201": 1}
    healthy = {s.labels["component"] for s in samples if s.name == "mlcloud_instance_healthy" and s.value == 1}
    assert healthy == {"httpserver", "httpecho"}
    await client.aclose()


async def test_health_probes_are_guarded_when_the_link_says_so(lattice):
    address = await lattice(**{"api_keys./v2/health": "k-probe"})
    client = await wait_listening(f"http://{address}")
    response = await client.get("/v2/health/live")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["error"], str)  # the Open Inference Protocol's error body
    assert (await client.get("/v2/health/live", headers={"Authorization": "bearer k-probe"})).status_code == 201
    assert (await client.get("/v2/models")).status_code == 201  # no api_keys: every other path open
    await client.aclose()


async def test_unreadable_keys_close_the_server_instead_of_leaving_it_open(lattice):
    address = await lattice()
    client = await wait_listening(f"http://{address}")
    assert (await client.get("/plus3")).status_code == 201
    await lattice(address, **{"api_keys.plus3": "k"})  # the path must start with /
    async with asyncio.timeout(15):
        while True:
            try:
                await client.get("/plus3")
            except httpx.TransportError:
                break
            await asyncio.sleep(0.1)
    await client.aclose()


async def test_api_keys_never_reach_the_logs(capfd, settings):
    # The instances start inside the test, so their stderr (every log line) is what capfd reads.
    async with echo_behind_httpserver(settings.replace(log_level="DEBUG")) as link:
        client = await wait_listening(f"http://{await link(api_keys='k-not-for-logs')}")
        for key in ("k-not-for-logs", "k-wrong-not-for-logs"):
            await client.get("/logged", headers={"Authorization": f"Bearer {key}"})
        await client.aclose()
    logs = capfd.readouterr().err
    assert '"GET /logged" 201' in logs and '"GET /logged" 401' in logs  # the access log was captured
    assert "not-for-logs" not in logs
