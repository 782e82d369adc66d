"""The washboard's "Try a model" panel, server side: ``POST /api/try/{route}/{kind}``.

The page sends an image or JSON here; the washboard sends it on to the HTTP API as any client
would (the address ``mlcloud.deploy`` prints, from the settings' ``http_address``) and answers
what came back, without judging it::

    {"status": 200, "url": "http://localhost:8078/mobilenetv27/matches", "latency_ms": 23.4,
     "headers": {"x-model": "…", "x-model-sha256": "…", "x-request-id": "…"}, "body": <the answer's JSON>}

``kind`` picks the route's path: ``matches`` (PUT an image, top-k labels), ``predict`` (POST rows,
KServe v1) or ``tensor`` (POST a JSON tensor to ``/{route}``); the query string (``?top=``,
``?proba=``) goes along. The API's own errors come back in ``status`` and ``body`` for the page to
show; only an API that cannot be reached is an error of this route (503). Going through the API,
not the lattice, is what a user's request does: its headers, its errors, its API-key checks (a
route behind a key answers 401 here too). Like every action it needs the washboard's token.
"""

from __future__ import annotations

import time

import httpx
from aiohttp import web

from mlcloud.deployment import base_url, check_name
from mlcloud.errors import LatticeUnavailable
from mlcloud.washboard.watcher import LatticeWatcher

ROUTE = "/api/try/{route}/{kind:matches|predict|tensor}"
PATHS = {"matches": ("PUT", "/{route}/matches"), "predict": ("POST", "/{route}/predict"),
         "tensor": ("POST", "/{route}")}
ANSWER_HEADERS = ("x-model", "x-model-sha256", "x-request-id")
TIMEOUT = 60.0  # seconds: a first request may wait for a model's load


def add_route(app: web.Application, watcher: web.AppKey[LatticeWatcher]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return await try_model(request, request.app[watcher])

    app.router.add_post(ROUTE, handler)


async def try_model(request: web.Request, watcher: LatticeWatcher) -> web.Response:
    route, kind = request.match_info["route"], request.match_info["kind"]
    check_name(route)  # one path segment of the API, never "..": a RequestError (400) otherwise
    method, path = PATHS[kind]
    url = base_url(watcher.settings) + path.format(route=route)
    body = await request.read()
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            answer = await client.request(method, url, params=request.query_string or None, content=body,
                                          headers={"Content-Type": request.content_type})
    except httpx.HTTPError as exc:
        raise LatticeUnavailable(f"the HTTP API at {url} did not answer: {exc!r}") from exc
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    try:
        parsed = answer.json()
    except ValueError:
        parsed = answer.text
    return web.json_response({
        "status": answer.status_code, "url": str(answer.url), "latency_ms": latency_ms,
        "headers": {name: answer.headers[name] for name in ANSWER_HEADERS if name in answer.headers},
        "body": parsed,
    })
