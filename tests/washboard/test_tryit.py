"""``POST /api/try/{route}/{kind}``: the washboard sends the page's input on to the HTTP API and
hands back what it answered. A small aiohttp app stands in for the API here, on a free port (the
panel against the real stack, in Chromium: tests/e2e/test_washboard_try.py)."""

from __future__ import annotations

import io

import aiohttp
import pytest
from aiohttp import web

from mlcloud.servers import free_port, running_app
from mlcloud.washboard.access import load_or_create_token
from mlcloud.washboard.app import create_washboard


async def api_answer(request: web.Request) -> web.Response:
    """Echoes what it was sent; a 400 in the API's error shape for a body that says so."""
    body = await request.read()
    if body == b"bad":
        return web.json_response({"error": {"kind": "RequestError", "message": "instances: bad"}}, status=400)
    return web.json_response(
        {"method": request.method, "path": request.path, "query": request.query_string,
         "content_type": request.content_type, "size": len(body)},
        headers={"X-Model": "m/1.0.0", "X-Model-Sha256": "ab" * 32, "X-Request-Id": "r1", "X-Other": "no"})


@pytest.fixture
async def washboard(settings):
    """(washboard URL, token, the stand-in API's address or None when it is down)."""
    api = web.Application(client_max_size=8 << 20)
    api.router.add_route("*", "/{tail:.*}", api_answer)
    async with running_app(api, "127.0.0.1:0", "the stand-in API", access_log=None) as api_address:
        settings = settings.replace(http_address=api_address)
        token = load_or_create_token(settings.state_dir)
        async with running_app(create_washboard(settings, token=token), "127.0.0.1:0", "the washboard",
                               access_log=None) as address:
            yield f"http://{address}", token


async def send(url: str, body: bytes, content_type: str, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with aiohttp.ClientSession() as http, http.post(url, data=io.BytesIO(body), headers=headers) as response:
        return response.status, await response.json()


async def test_an_image_goes_to_matches_and_the_answer_comes_back_with_its_model_headers(washboard):
    url, token = washboard
    image = bytes(2_000_000)  # larger than aiohttp's default 1 MiB limit on a request body
    status, reply = await send(f"{url}/api/try/cats/matches?top=3", image, "image/jpeg", token)
    assert status == 200
    assert reply["status"] == 200 and reply["url"].endswith("/cats/matches?top=3") and reply["latency_ms"] > 0
    assert reply["body"] == {"method": "PUT", "path": "/cats/matches", "query": "top=3", "content_type": "image/jpeg",
                             "size": len(image)}
    assert reply["headers"] == {"x-model": "m/1.0.0", "x-model-sha256": "ab" * 32, "x-request-id": "r1"}
    status, reply = await send(f"{url}/api/try/iris/predict", b"{}", "application/json", token)
    assert reply["body"]["method"] == "POST" and reply["body"]["path"] == "/iris/predict"
    status, reply = await send(f"{url}/api/try/iris/tensor", b"{}", "application/json", token)
    assert reply["body"]["path"] == "/iris"


async def test_the_apis_error_is_handed_back_and_the_panels_own_errors_are_clear(washboard, settings):
    url, token = washboard
    status, reply = await send(f"{url}/api/try/iris/predict", b"bad", "application/json", token)
    assert (status, reply["status"]) == (200, 400)
    assert reply["body"] == {"error": {"kind": "RequestError", "message": "instances: bad"}}
    status, reply = await send(f"{url}/api/try/iris/predict", b"{}", "application/json", None)
    assert status == 401 and reply["error"]["kind"] == "Unauthorized"
    status, reply = await send(f"{url}/api/try/v2/predict", b"{}", "application/json", token)
    assert status == 400 and "cannot be a route" in reply["error"]["message"]
    status, reply = await send(f"{url}/api/try/iris/delete", b"{}", "application/json", token)
    assert status == 404


async def test_an_api_that_does_not_answer_is_a_503_naming_it(settings):
    settings = settings.replace(http_address=f"127.0.0.1:{free_port()}")  # nobody listens there
    token = load_or_create_token(settings.state_dir)
    async with running_app(create_washboard(settings, token=token), "127.0.0.1:0", "the washboard",
                           access_log=None) as address:
        status, reply = await send(f"http://{address}/api/try/iris/predict", b"{}", "application/json", token)
    assert status == 503 and "the HTTP API at http://127.0.0.1:" in reply["error"]["message"]
