"""The washboard's web application: the page, its live stream, JSON views and actions.

Routes::

    GET  /                                   the page (static/index.html)
    GET  /static/…                           its CSS and JavaScript
    GET  /api/stream                         server-sent events: ``snapshot`` first, then ``update``s
    GET  /api/state                          everything the page shows, as one JSON document
    GET  /api/{status,hosts,actors,providers,links,models,experiments,feed}
    POST /api/actors/{actor_id}/scale        {"host_id"?, "count"}
    POST /api/providers/{provider_id}/stop   {"host_id", "link_name"?}
    POST /api/providers/{provider_id}/start  {"host_id", "link_name"?, "ref"?, "config"?}
    POST /api/models/{route}/{load|unload}   {"actor_id", "provider_id", "link_name"?, "bindle_id"?}
    POST /api/try/{route}/{matches|predict|tensor}   an image or JSON, sent on to the HTTP API (:mod:`.tryit`)
    GET  /healthz

An ``update`` carries only the sections that changed plus new feed entries. Errors are
``{"error": {"kind", "message"}}`` with the status of the :mod:`mlcloud.errors` class. Actions
need the washboard's token and come from the page's own origin (:mod:`.access`: 403 for another
site, 401 without the token), and take only JSON bodies (415), so another web site open in the
same browser cannot drive the lattice through a form post.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from mlcloud.errors import HttpErrorReply, MLCloudError, RequestError
from mlcloud.lattice.control import RepositoryOp
from mlcloud.settings import Settings
from mlcloud.washboard import tryit
from mlcloud.washboard.access import TOKEN_DIGEST, guard_actions, token_digest
from mlcloud.washboard.state import Section
from mlcloud.washboard.watcher import DEFAULT_POLL_INTERVAL, LatticeWatcher

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
WATCHER = web.AppKey("watcher", LatticeWatcher)
INDEX = web.AppKey("index", bytes)
KEEPALIVE_SECONDS = 10.0
SSE_RETRY_MS = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_washboard(settings: Settings, *, token: str,
                     poll_interval: float = DEFAULT_POLL_INTERVAL) -> web.Application:
    """The washboard for ``settings.lattice``, acting for whoever holds ``token`` (see
    :func:`.access.load_or_create_token`); it opens its own NATS connection on startup."""
    # Bodies as large as the HTTP API takes: a photo for the "Try a model" panel.
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware, guard_actions])
    app[TOKEN_DIGEST] = token_digest(token)
    app[WATCHER] = LatticeWatcher(settings, poll_interval=poll_interval)
    app.cleanup_ctx.append(_watching)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/", index)
    app[INDEX] = index_html()
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/feed", feed)
    app.router.add_get("/api/{section:status|hosts|actors|providers|links|models|experiments}", section)
    app.router.add_post("/api/actors/{actor_id}/scale", scale_actor)
    app.router.add_post("/api/providers/{provider_id}/stop", stop_provider)
    app.router.add_post("/api/providers/{provider_id}/start", start_provider)
    app.router.add_post("/api/models/{route}/{action:load|unload}", model_repository)
    tryit.add_route(app, WATCHER)
    app.router.add_get("/healthz", healthz)
    return app


async def _watching(app: web.Application) -> AsyncIterator[None]:
    async with app[WATCHER]:
        yield


async def _end_streams(app: web.Application) -> None:
    # Open event streams would otherwise hold the server's shutdown until its timeout.
    app[WATCHER].close_streams()


def error_response(error: HttpErrorReply) -> web.Response:
    return web.json_response(error.body, status=error.status, headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MLCloudError as err:
        return error_response(err.to_http())
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error_response(HttpErrorReply.of(exc.status, exc.reason, exc.text or exc.reason,
                                                allow=exc.headers.get("Allow")))
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug here must still answer in the API's error shape
        log.exception("washboard request %s %s failed", request.method, request.path)
        return error_response(MLCloudError(f"{type(exc).__name__}: {exc}").to_http())


# ---- reading --------------------------------------------------------------------------------


def index_html() -> bytes:
    """The page, its asset URLs stamped with a hash of the assets, so an upgrade is never half-cached."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*.*")):
        digest.update(path.read_bytes())
    return (STATIC / "index.html").read_bytes().replace(b"__VERSION__", digest.hexdigest()[:12].encode())


async def index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[INDEX], content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[WATCHER].state.snapshot())


async def section(request: web.Request) -> web.Response:
    return web.json_response(request.app[WATCHER].state.view(Section(request.match_info["section"])))


async def feed(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[WATCHER].state.feed))


async def healthz(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    return web.json_response({"ok": True, "nats_connected": watcher.connected,
                              "last_update": watcher.state.last_update})


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a full snapshot, then updates; a comment every few seconds keeps it open."""
    watcher = request.app[WATCHER]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
    })
    await response.prepare(request)
    subscriber, snapshot = watcher.subscribe()
    try:
        await response.write(f"retry: {SSE_RETRY_MS}\nevent: snapshot\ndata: {json.dumps(snapshot)}\n\n".encode())
        while True:
            try:
                message = await asyncio.wait_for(subscriber.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if message is None:
                break
            await response.write(b"event: update\ndata: " + message + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away
    finally:
        watcher.unsubscribe(subscriber)
    return response


# ---- actions --------------------------------------------------------------------------------


async def action_body(request: web.Request) -> dict[str, Any]:
    """The JSON body of an action (whose origin and token :func:`.access.guard_actions` checked)."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="UnsupportedMediaType", text="actions take a JSON body")
    try:
        body = await request.json()
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


async def scale_actor(request: web.Request) -> web.Response:
    body = await action_body(request)
    if "count" not in body:
        raise RequestError("missing field 'count'")
    actor_id = request.match_info["actor_id"]
    reply = await request.app[WATCHER].scale_actor(actor_id, body["count"], body.get("host_id"))
    log.info("washboard: scaled actor %s to %s", actor_id, body["count"])
    return web.json_response({"ok": True, "result": msgspec.to_builtins(reply)})


async def model_repository(request: web.Request) -> web.Response:
    """Load or unload a route: the model repository operation of ``/v2/repository`` and the CLI."""
    body = await action_body(request)
    route, action = request.match_info["route"], request.match_info["action"]
    reply = await request.app[WATCHER].model_repository(
        RepositoryOp(action), str(body.get("actor_id", "")), str(body.get("provider_id", "")),
        str(body.get("link_name", "")), route, str(body.get("bindle_id", "")),
    )
    log.info("washboard: %s model %s", action, route)
    return web.json_response({"ok": True, "result": msgspec.to_builtins(reply)})


async def stop_provider(request: web.Request) -> web.Response:
    body = await action_body(request)
    provider_id = request.match_info["provider_id"]
    reply = await request.app[WATCHER].stop_provider(provider_id, body.get("host_id", ""), body.get("link_name", ""))
    log.info("washboard: stopped provider %s", provider_id)
    return web.json_response({"ok": True, "result": msgspec.to_builtins(reply)})


async def start_provider(request: web.Request) -> web.Response:
    body = await action_body(request)
    provider_id = request.match_info["provider_id"]
    reply = await request.app[WATCHER].start_provider(
        provider_id, body.get("host_id", ""), body.get("link_name", ""), body.get("ref"), body.get("config"),
    )
    log.info("washboard: started provider %s", provider_id)
    return web.json_response({"ok": True, "result": msgspec.to_builtins(reply)})
