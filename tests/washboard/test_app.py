"""The washboard's HTTP side against a real host: JSON views, the event stream, actions and their errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.washboard.conftest import Lattice, Washboard


async def until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_json_views_show_the_lattice(washboard: Washboard, lattice: Lattice, http):
    async def models_ready():
        models = await get_json(http, washboard.url + "api/models")
        return models if any(m["state"] == "READY" for m in models) else None

    async def both_actors_healthy():
        # The view follows events and a 0.5 s poll: a model can be READY before the poll that
        # shows its actor's instance has come round (seen once on a loaded CI machine).
        actors = await get_json(http, washboard.url + "api/actors")
        return actors if sum(a["status"] == "healthy" for a in actors) == 2 else None

    models = await until(models_ready)
    actors = await until(both_actors_healthy)
    hosts = await get_json(http, washboard.url + "api/hosts")
    assert [h["id"] for h in hosts] == [lattice.host.id]
    assert hosts[0]["labels"]["zone"] == "lab" and hosts[0]["status"] == "up"
    by_name = {a["name"]: (a["status"], a["instances"]) for a in actors}
    assert by_name == {"caller": ("healthy", 1), "router": ("healthy", 1)}
    assert next(a for a in actors if a["name"] == "router")["capabilities"] == ["wasmcloud:mlinference"]
    providers = await get_json(http, washboard.url + "api/providers")
    assert {(p["name"], p["contract_id"], p["status"]) for p in providers} == {
        ("echo", "test:echo", "healthy"), ("inference-fixture", "wasmcloud:mlinference", "healthy")}
    by_route = {m["name"]: m for m in models}
    assert set(by_route) == {"mobilenetv27", "identity", "plus3", "squeezenet"}
    assert by_route["mobilenetv27"]["bindle_id"] == "efficientnet-lite0/1.0.0"
    assert by_route["mobilenetv27"]["p99_ms"] == pytest.approx(18.9)
    assert by_route["squeezenet"]["state"] == "FAILED" and "InvoiceNotFound" in by_route["squeezenet"]["reason"]
    assert by_route["plus3"]["actor_name"] == "router" and by_route["plus3"]["provider_name"] == "inference-fixture"


async def test_secrets_never_reach_the_page(washboard: Washboard, lattice: Lattice, http):
    await until(lambda: len(washboard.watcher.state.links) == 2)
    links = {link["contract_id"]: link for link in await get_json(http, washboard.url + "api/links")}
    assert links["test:echo"]["values"] == {"greeting": "hello", "secret_key": "••••••",
                                            "api_keys./plus3": "••••••"}
    assert links["wasmcloud:mlinference"]["values"]["api_token"] == "••••••"
    assert links["wasmcloud:mlinference"]["values"]["plus3"] == "plus3/0.1.0"
    async with http.get(washboard.url + "api/state") as response:
        text = await response.text()
    for secret in ("abc123", "s3cret-token", "hunter2", "k-plus3", washboard.token):
        assert secret not in text


def running_actors(washboard: Washboard) -> set[str]:
    return {a.name for inv in washboard.watcher.state.inventories.values() for a in inv.actors}


async def test_stream_starts_with_a_snapshot_then_sends_changes(washboard: Washboard, lattice: Lattice, http):
    # On a loaded machine the first poll may predate the second actor; wait for both.
    await until(lambda: running_actors(washboard) == {"caller", "router"})
    async with http.get(washboard.url + "api/stream") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = _sse(response)
        name, snapshot = await anext(events)
        assert name == "snapshot"
        assert {a["name"] for a in snapshot["sections"]["actors"]} == {"caller", "router"}
        await lattice.ctl.scale_actor(lattice.host.id, lattice.caller, 2)
        async for name, update in events:
            assert name == "update"  # after the snapshot, only changes
            actors = update["sections"].get("actors")
            if actors and next(a for a in actors if a["name"] == "caller")["instances"] == 2:
                break
        else:
            raise AssertionError("the stream ended before the scaled actor showed")


async def _sse(response: aiohttp.ClientResponse):
    name, data = "message", []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(http: aiohttp.ClientSession, url: str, body: Any, token: str | None,
               **kwargs: Any) -> tuple[int, Any]:
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    async with http.post(url, json=body, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def test_actions_scale_stop_and_start_again_with_the_last_config(washboard: Washboard, lattice: Lattice, http):
    await until(lambda: washboard.watcher.state.inventories)
    scale = f"{washboard.url}api/actors/{lattice.caller}/scale"
    status, reply = await post(http, scale, {"count": 2}, washboard.token)
    assert status == 200 and reply["result"]["instances"] == 2
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    assert len(next(a for a in inventory.actors if a.name == "caller").instances) == 2

    body = {"host_id": lattice.host.id, "link_name": "default"}
    status, _ = await post(http, f"{washboard.url}api/providers/{lattice.echo}/stop", body, washboard.token)
    assert status == 200

    async def echo_listed_as_stopped():
        providers = await get_json(http, washboard.url + "api/providers")
        return any(p["name"] == "echo" and p["status"] == "stopped" for p in providers)

    await until(echo_listed_as_stopped)
    status, reply = await post(http, f"{washboard.url}api/providers/{lattice.echo}/start", body, washboard.token)
    assert status == 200, reply
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    assert "echo" in [p.name for p in inventory.providers]


async def test_action_errors_are_clear(washboard: Washboard, lattice: Lattice, http):
    await until(lambda: washboard.watcher.state.inventories)
    scale = f"{washboard.url}api/actors/{lattice.caller}/scale"
    status, reply = await post(http, scale, {"count": "many"}, washboard.token)
    assert status == 400 and "whole number" in reply["error"]["message"]
    status, reply = await post(http, scale, {"count": 1000}, washboard.token)
    assert status == 400 and "between 0 and" in reply["error"]["message"]
    status, reply = await post(http, scale, {}, washboard.token)
    assert status == 400 and "count" in reply["error"]["message"]
    status, reply = await post(http, f"{washboard.url}api/actors/MNOSUCHACTOR/scale",
                               {"count": 1, "host_id": lattice.host.id}, washboard.token)
    assert status == 404 and reply["error"]["kind"] == "ComponentNotFound"
    status, reply = await post(http, f"{washboard.url}api/providers/VNOSUCH/start",
                               {"host_id": lattice.host.id}, washboard.token)
    assert status == 404 and "has not seen provider" in reply["error"]["message"]
    status, reply = await post(http, f"{washboard.url}api/providers/{lattice.echo}/stop", {}, washboard.token)
    assert status == 400 and "host_id" in reply["error"]["message"]
    # Another site's page must not drive the lattice: wrong origin, or a form post instead of JSON.
    async with http.post(scale, data={"count": "1"}, headers=bearer(washboard.token)) as response:
        assert response.status == 415  # actions take JSON only
    async with http.get(washboard.url + "api/nothing") as response:
        assert response.status == 404 and "error" in await response.json()


async def test_actions_need_the_token(washboard: Washboard, lattice: Lattice, http):
    await until(lambda: washboard.watcher.state.inventories)
    scale = f"{washboard.url}api/actors/{lattice.caller}/scale"
    for token in (None, "not-the-token"):
        status, reply = await post(http, scale, {"count": 2}, token)
        assert status == 401 and reply["error"]["kind"] == "Unauthorized"
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    assert len(next(a for a in inventory.actors if a.name == "caller").instances) == 1
    status, reply = await post(http, scale, {"count": 2}, washboard.token)
    assert status == 200 and reply["result"]["instances"] == 2


async def test_cross_site_requests_are_refused_even_with_the_token(washboard: Washboard, lattice: Lattice, http):
    await until(lambda: washboard.watcher.state.inventories)
    scale = f"{washboard.url}api/actors/{lattice.caller}/scale"
    # What a browser sends for a form on another site: refused before the token or the body is read.
    form = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with http.post(scale, data={"count": "3"}, headers={**form, **bearer(washboard.token)}) as response:
        assert response.status == 403 and (await response.json())["error"]["kind"] == "Forbidden"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"}):
        status, _ = await post(http, scale, {"count": 3}, washboard.token, headers=headers)
        assert status == 403, headers
    page = {"Origin": washboard.url.rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    status, reply = await post(http, scale, {"count": 3}, washboard.token, headers=page)
    assert status == 200 and reply["result"]["instances"] == 3


async def test_index_page_and_assets_are_served(washboard: Washboard, http):
    async with http.get(washboard.url) as response:
        page = await response.text()
        assert response.status == 200 and "<title>mlcloud washboard</title>" in page
        assert "__VERSION__" not in page
    for asset in ("static/app.js", "static/style.css"):
        async with http.get(washboard.url + asset) as response:
            assert response.status == 200
    health = await get_json(http, washboard.url + "healthz")
    assert health["ok"] is True
