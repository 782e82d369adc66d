"""Request ids and trace context: where a request's id comes from, how every hop knows it, and
how it gets into every log line (docs/observability.md).

The httpserver provider gives each HTTP request an id (:func:`from_headers`): the client's
``X-Request-Id`` when it is a plain token, else the trace id of its W3C ``traceparent``, else a new
W3C trace id. A malformed header is never trusted: it is replaced, so nothing a client sends
reaches a log line unchecked. The id is the request's invocation id on the lattice (the RPC
envelope's ``id``, which every call made while serving it and every forwarded chain stage keeps)
and the envelope's ``trace`` is the W3C traceparent of the sending stage.

While a call or request is served, :class:`serving` holds both in a context variable, which
:class:`RequestIdFilter` puts on every log record (``%(request_id)s``) and the RPC client puts on
every call. With OpenTelemetry configured (:func:`setup`; the ``otel`` extra and the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``) each :class:`serving` is also a span, child of the caller's:
:mod:`mlcloud.otel`. Without it nothing of OpenTelemetry is imported, and a hop costs a context
variable.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
TRACEPARENT_HEADER = "traceparent"
MAX_REQUEST_ID = 128
# Tokens that UUIDs, ULIDs, base64 and the ids of proxies (nginx, Envoy, Heroku) are made of, and
# no character that could end or forge a log line or a header.
_REQUEST_ID = re.compile(rf"[0-9A-Za-z._:+=/@-]{{1,{MAX_REQUEST_ID}}}")
# W3C Trace Context §3.2: version-traceid-parentid-flags, lowercase hex; a later version may add
# fields after the four of version 00.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
NO_REQUEST = "-"  # %(request_id)s of a record made outside any request


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C ``traceparent``."""

    trace_id: str
    span_id: str
    flags: int

    @classmethod
    def parse(cls, value: str) -> TraceParent | None:
        """The traceparent ``value`` carries, or None when it is malformed (W3C: then ignore it)."""
        match = _TRACEPARENT.fullmatch(value.strip()) if len(value) <= 512 else None
        if match is None:
            return None
        version, trace_id, span_id, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        return cls(trace_id, span_id, int(flags, 16))

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def new_trace_id() -> str:
    """A random W3C trace id (32 lowercase hex digits), the id of a request that brought none."""
    return uuid.uuid4().hex


def valid_request_id(value: str) -> str | None:
    """``value`` if it is a request id that may go into logs and headers as it is, else None."""
    return value if _REQUEST_ID.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class Trace:
    """What the current task serves: its request's id and the traceparent its calls carry."""

    request_id: str = ""
    traceparent: str = ""  # the W3C traceparent of this stage: its span's, else the caller's


_NO_TRACE = Trace()
_current: ContextVar[Trace] = ContextVar("mlcloud_trace", default=_NO_TRACE)


def current() -> Trace:
    """The trace of the request being served here; empty outside one."""
    return _current.get()


def from_headers(headers: Mapping[str, str]) -> tuple[str, TraceParent | None]:
    """The request id of an HTTP request, and its valid incoming traceparent if any.

    ``X-Request-Id`` when valid, else the traceparent's trace id, else "" (:class:`serving` then
    makes a new trace id).
    """
    raw = headers.get(TRACEPARENT_HEADER)
    parent = TraceParent.parse(raw) if raw else None
    given = valid_request_id(headers.get(REQUEST_ID_HEADER, ""))
    return given or (parent.trace_id if parent else ""), parent


class Span(Protocol):
    """A span a :class:`Tracer` started (:mod:`mlcloud.otel`)."""

    @property
    def traceparent(self) -> str: ...

    def set_attribute(self, name: str, value: str | int) -> None: ...

    def failed(self, kind: str, message: str) -> None: ...

    def end(self) -> None: ...


class Tracer(Protocol):
    def start(self, name: str, traceparent: str, attributes: dict[str, str]) -> Span:
        """A SERVER span named ``name``, child of ``traceparent`` (a root span when empty)."""

    def shutdown(self) -> None:
        """Export what is left; called once when the process ends."""


_tracer: Tracer | None = None


class serving:
    """``with serving(name, request_id, traceparent):`` — serve one call or request: set the
    current :class:`Trace`, and start a span when spans are exported (:func:`setup`).

    An empty ``request_id`` (an HTTP request without one) becomes the span's trace id, or a new
    trace id.
    """

    __slots__ = ("attributes", "name", "parent", "request_id", "span", "trace", "_token")

    def __init__(self, name: str, request_id: str, traceparent: str = "", *,
                 attributes: dict[str, str] | None = None) -> None:
        self.name = name
        self.request_id = request_id
        self.parent = traceparent
        self.attributes = attributes
        self.span: Span | None = None
        self.trace = _NO_TRACE
        self._token: Token[Trace] | None = None

    def __enter__(self) -> serving:
        traceparent = self.parent
        request_id = self.request_id
        if _tracer is not None:
            attributes = {"mlcloud.request_id": request_id} if request_id else {}
            self.span = _tracer.start(self.name, traceparent, {**attributes, **(self.attributes or {})})
            traceparent = self.span.traceparent
            if not request_id:
                request_id = traceparent[3:35]  # the root span's trace id
                self.span.set_attribute("mlcloud.request_id", request_id)
        elif not request_id:
            request_id = new_trace_id()
        self.trace = Trace(request_id, traceparent)
        self._token = _current.set(self.trace)
        return self

    def failed(self, kind: str, message: str) -> None:
        """Mark the span as failed with an error of ``kind`` (an :class:`~mlcloud.errors.MLCloudError`'s)."""
        if self.span is not None:
            self.span.failed(kind, message)

    def set_attribute(self, name: str, value: str | int) -> None:
        if self.span is not None:
            self.span.set_attribute(name, value)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.span is not None:
            if exc is not None:
                self.span.failed(type(exc).__name__, str(exc))
            self.span.end()
        if self._token is not None:
            _current.reset(self._token)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record as ``request_id`` (``-`` outside requests).

    Attach it to a handler (:func:`add_request_ids`): a handler's filters see the records of every
    logger that propagates to it, a logger's only its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get().request_id or NO_REQUEST
        return True


def add_request_ids(handler: logging.Handler) -> logging.Handler:
    handler.addFilter(RequestIdFilter())
    return handler


def otel_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for spans: an OTLP endpoint set and the SDK not disabled."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint) and environ.get("OTEL_SDK_DISABLED", "").lower() != "true"


def setup(service: str, instance_id: str, exporter: Any = None) -> bool:
    """Export this process's spans as ``service`` when :func:`otel_configured`, and the
    ``otel`` extra is installed (else say so once and go on without); True when exporting.

    ``exporter``: an OpenTelemetry span exporter to use instead (a test's in-memory one).
    """
    global _tracer
    if exporter is None and not otel_configured():
        return False
    try:
        from mlcloud.otel import OtelTracer
    except ImportError as exc:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not installed (%s): "
                    "no spans are exported; pip install 'mlcloud[otel]'", exc)
        return False
    _tracer = OtelTracer(service, instance_id, exporter)
    return True


def shutdown() -> None:
    """Export the spans still buffered and stop exporting."""
    global _tracer
    if _tracer is not None:
        _tracer.shutdown()
        _tracer = None
