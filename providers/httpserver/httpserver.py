"""The ``wasmcloud:httpserver`` provider: an aiohttp server per link, each request a call to the actor.

Link values (all optional):

* ``address`` — ``host:port`` to listen on (default ``MLCLOUD_HTTP_ADDRESS``, 0.0.0.0:8078);
* ``max_body_bytes`` — larger request bodies get 413 (default ``MLCLOUD_MAX_BODY_BYTES``, 64 MiB);
* ``timeout`` — seconds to wait for the actor before answering 504 (default: the RPC timeout);
* ``cors_allowed_origins`` — comma-separated origins, or ``*``; adds CORS headers and answers
  preflight requests (``cors_allowed_methods``/``cors_allowed_headers``/``cors_max_age`` too);
* ``tls_cert_file`` / ``tls_priv_key_file`` — serve HTTPS with that PEM certificate and key;
* ``api_keys`` — comma-separated API keys that every path needs (``Authorization: Bearer KEY``);
* ``api_keys./some/path`` — the keys of that path and every path under it, instead of
  ``api_keys``: ``api_keys./plus3=k1,k2`` guards ``/plus3`` and ``/plus3/…``. The longest
  configured path wins, matched segment by segment as the api actor routes (``//plus3`` is
  ``/plus3``); an empty value leaves a path open (``api_keys./identity=``). The health probes
  under ``/v2/health`` stay open unless a link sets ``api_keys./v2/health`` itself.

``GET /metrics`` answers with the Prometheus figures of every host and instance of the lattice,
gathered over NATS (:mod:`mlcloud.lattice.scrape`; docs/metrics.md); the ``api_keys`` rules apply
to it as to any path. Each forwarded request is counted and timed here (:class:`HttpFigures`).

A request without a key its path needs, or with a wrong one, gets 401 and
``WWW-Authenticate: Bearer``; a request that passes has its ``Authorization`` header removed
before the actor sees it (the key is the server's, not the actor's). Only SHA-256 digests of the
keys are kept, compared in constant time, and no key is ever logged.

Every request gets an id (:mod:`mlcloud.tracing`): its ``X-Request-Id`` when that is a plain
token, else its W3C ``traceparent``'s trace id, else a new trace id. The id travels with every
call made for the request, is in every stage's log lines (here the access log's) and comes back
as ``X-Request-Id``; a request that brought a traceparent gets one back too (this stage's).

Errors of the lattice (timeout, nobody serving, a crashed call) become the JSON error body of
the HTTP API with the right status; nothing a client sends can crash the server. While this
process's connection to NATS is down the listener stays up and each request gets a 503
``LatticeUnavailable`` with ``Retry-After`` at once (:mod:`mlcloud.lattice.rpc` fails the call).

A request whose method RFC 9110 calls idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) is
made again when the actor instance that held it dies or is restarting, within the same deadline,
as nginx's ``proxy_next_upstream`` passes such requests to the next server; a POST (or PATCH, or
any other method) never is, since running it twice may do twice what it does: its client gets
the 503 and decides.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aiohttp import web

from mlcloud import listeners, oip, tracing
from mlcloud.errors import ConfigError, MLCloudError, PayloadTooLarge, Unauthorized
from mlcloud.interfaces import HANDLE_REQUEST, HttpRequest
from mlcloud.lattice.control import LinkDefinition
from mlcloud.metrics import CONTENT_TYPE, HttpFigures
from mlcloud.sdk import Context, HealthReport, Provider

log = logging.getLogger("mlcloud.httpserver")
access_log = logging.getLogger("mlcloud.httpserver.access")

API_KEYS = "api_keys"
OPEN_BY_DEFAULT = ("/v2/health",)  # liveness and readiness probes (load balancers, k8s) carry no key
# RFC 9110 §9.2.2: PUT, DELETE and the safe methods. Their requests go to the actor as an
# idempotent HandleRequest, which the lattice makes again after its instance died (see above).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
HANDLE_IDEMPOTENT_REQUEST = replace(HANDLE_REQUEST, idempotent=True)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKeys:
    """Which API keys each path needs, from the link's ``api_keys`` values; no rules: all open."""

    # (path segments, digests of the keys), most segments first, so the longest path wins.
    rules: tuple[tuple[tuple[str, ...], frozenset[bytes]], ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> ApiKeys:
        rules: dict[tuple[str, ...], frozenset[bytes]] = {_segments(p): frozenset() for p in OPEN_BY_DEFAULT}
        for name, value in values.items():
            if name != API_KEYS and not name.startswith(API_KEYS + "."):
                continue
            path = name.removeprefix(API_KEYS).removeprefix(".") or "/"
            if not path.startswith("/"):
                raise ConfigError(f"link value {name!r}: the path after {API_KEYS}. must start with /")
            rules[_segments(path)] = frozenset(_digest(k.strip()) for k in value.split(",") if k.strip())
        if not any(rules.values()):
            return cls()
        return cls(tuple(sorted(rules.items(), key=lambda rule: len(rule[0]), reverse=True)))

    def needed(self, path: str) -> frozenset[bytes]:
        """The digests of the keys ``path`` accepts; empty when it is open."""
        segments = _segments(path)
        for prefix, keys in self.rules:
            if segments[:len(prefix)] == prefix:
                return keys
        return frozenset()

    def check(self, path: str, authorization: str) -> bool:
        """True when ``path`` needs a key and ``authorization`` carries one of them; raises
        :class:`Unauthorized` when it needs one and does not; False when the path is open."""
        keys = self.needed(path)
        if not keys:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized(f"{path} needs an API key: send the header Authorization: Bearer KEY")
        digest = _digest(presented.strip())
        # Every key is compared, so the time taken says nothing about which one came close.
        matched = [hmac.compare_digest(digest, key) for key in keys]
        if not any(matched):
            raise Unauthorized(f"the API key is not valid for {path}")
        return True


@dataclass(frozen=True)
class ServerConfig:
    address: str
    max_body_bytes: int
    timeout: float
    cors_origins: tuple[str, ...] = ()
    cors_methods: str = "GET, POST, PUT, DELETE, OPTIONS"
    cors_headers: str = "*, Authorization"  # the wildcard does not cover Authorization (Fetch spec)
    cors_max_age: str = "600"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    api_keys: ApiKeys = ApiKeys()

    @classmethod
    def from_link(cls, link: LinkDefinition, ctx: Context) -> ServerConfig:
        v = link.values
        origins = tuple(o.strip() for o in v.get("cors_allowed_origins", "").split(",") if o.strip())
        return cls(
            address=v.get("address") or ctx.settings.http_address,
            max_body_bytes=int(v.get("max_body_bytes") or ctx.settings.max_body_bytes),
            timeout=float(v.get("timeout") or ctx.settings.rpc_timeout),
            cors_origins=origins,
            cors_methods=v.get("cors_allowed_methods", cls.cors_methods),
            cors_headers=v.get("cors_allowed_headers", cls.cors_headers),
            cors_max_age=v.get("cors_max_age", cls.cors_max_age),
            tls_cert_file=v.get("tls_cert_file", ""),
            tls_key_file=v.get("tls_priv_key_file", ""),
            api_keys=ApiKeys.from_values(v),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file or None)
        return context


def error_response(err: MLCloudError, path: str) -> web.Response:
    """The error in the body of the path's protocol (mlcloud's, or the Open Inference Protocol's)."""
    status, headers, body = oip.error_reply(err) if oip.is_oip_path(path) else err.to_http()
    return web.json_response(body, status=status, headers=headers)


class LinkedServer:
    """One listening server forwarding to one actor."""

    def __init__(self, link: LinkDefinition, config: ServerConfig, ctx: Context) -> None:
        self.link = link
        self.config = config
        self.ctx = ctx
        self.runner: web.AppRunner | None = None
        self.error = ""
        self.figures = HttpFigures()

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._cors, self._count])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        ssl_context = self.config.ssl_context()
        try:
            # The host's socket (mlcloud.listeners): it stays open, queueing connections, while
            # this process restarts.
            sock = await listeners.listen(self.config.address)
            await web.SockSite(self.runner, sock, ssl_context=ssl_context).start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            self.error = f"cannot listen on {self.config.address}: {exc.strerror}"
            raise
        scheme = "https" if self.config.tls_cert_file else "http"
        log.info("listening on %s://%s for actor %s", scheme, self.config.address, self.link.actor_id[:8])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @web.middleware
    async def _cors(self, request: web.Request, handler) -> web.StreamResponse:
        origins = self.config.cors_origins
        origin = request.headers.get("Origin", "")
        allowed = bool(origins) and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and allowed and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = self.config.cors_methods
            response.headers["Access-Control-Allow-Headers"] = self.config.cors_headers
            response.headers["Access-Control-Max-Age"] = self.config.cors_max_age
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Vary"] = "Origin"
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id, parent = tracing.from_headers(request.headers)
        with tracing.serving(request.method, request_id, str(parent) if parent else "",
                             attributes={"http.request.method": request.method, "url.path": request.path}) as served:
            response = await self._forward(request)
            response.headers[tracing.REQUEST_ID_HEADER] = served.trace.request_id
            if parent is not None:
                response.headers[tracing.TRACEPARENT_HEADER] = served.trace.traceparent
            served.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                served.failed(str(response.status), response.reason or "")
            access_log.info(
                '%s "%s %s" %d %d %.1fms', request.remote, request.method, request.path_qs,
                response.status, response.body_length if hasattr(response, "body_length") else 0,
                (time.perf_counter() - started) * 1000,
            )
        return response

    @web.middleware
    async def _count(self, request: web.Request, handler) -> web.StreamResponse:
        """Count and time each request forwarded to the actor (not the scrapes of ``/metrics``)."""
        started = time.perf_counter()
        response: web.StreamResponse = await handler(request)
        if request.match_info.handler == self._handle:
            self.figures.observe(request.path, response.status, response.headers.get("x-model", ""),
                                 time.perf_counter() - started)
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            self.config.api_keys.check(request.path, request.headers.get("Authorization", ""))
            body = await self.ctx.gather_metrics()
        except MLCloudError as err:
            return error_response(err, request.path)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _forward(self, request: web.Request) -> web.Response:
        header = {k.lower(): v for k, v in request.headers.items()}
        try:
            if self.config.api_keys.check(request.path, header.get("authorization", "")):
                del header["authorization"]
        except Unauthorized as err:
            return error_response(err, request.path)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error_response(PayloadTooLarge(
                f"request body is larger than the limit of {self.config.max_body_bytes} bytes"), request.path)
        message = HttpRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            header=header,
            body=body,
        )
        try:
            op = HANDLE_IDEMPOTENT_REQUEST if request.method in IDEMPOTENT_METHODS else HANDLE_REQUEST
            reply = await self.ctx.call_actor(self.link.actor_id, op, message, timeout=self.config.timeout)
        except MLCloudError as err:
            log.warning("%s %s: %s: %s", request.method, request.path, err.kind, err.message)
            return error_response(err, request.path)
        return web.Response(status=reply.status_code, headers=reply.header, body=reply.body)


class HttpServer(Provider):
    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[str, LinkedServer] = {}  # by actor id
        self.refused: dict[str, str] = {}  # actor id → why its link's values cannot be served
        self.ctx: Context | None = None

    async def on_start(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_link_put(self, link: LinkDefinition) -> None:
        assert self.ctx is not None
        current = self.servers.get(link.actor_id)
        try:
            config = ServerConfig.from_link(link, self.ctx)
        except (ConfigError, ValueError) as exc:
            # Fail closed: a link whose keys cannot be read must not leave the old, maybe open, server up.
            self.refused[link.actor_id] = f"link from {link.actor_id[:8]}: {exc}"
            log.error("%s", self.refused[link.actor_id])
            if current is not None:
                await self.servers.pop(link.actor_id).stop()
                listeners.release(current.config.address)
            return
        self.refused.pop(link.actor_id, None)
        if current is not None and current.config == config and not current.error:
            current.link = link
            return
        if current is not None:
            await current.stop()
            if current.config.address != config.address:
                listeners.release(current.config.address)
        server = self.servers[link.actor_id] = LinkedServer(link, config, self.ctx)
        try:
            await server.start()
        except OSError:
            log.error("link from %s: %s", link.actor_id[:8], server.error)

    async def on_link_del(self, link: LinkDefinition) -> None:
        self.refused.pop(link.actor_id, None)
        server = self.servers.pop(link.actor_id, None)
        if server is not None:
            await server.stop()
            listeners.release(server.config.address)

    async def on_stop(self) -> None:
        for server in self.servers.values():
            await server.stop()

    async def health(self) -> HealthReport:
        failed = [s.error for s in self.servers.values() if s.error] + list(self.refused.values())
        return HealthReport(healthy=not failed, message="; ".join(failed))


component = HttpServer
