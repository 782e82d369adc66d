"""OpenTelemetry spans of mlcloud's stages, exported over OTLP/HTTP (the ``otel`` extra).

Imported only by :func:`mlcloud.tracing.setup` when an endpoint is configured. Each process is
one OpenTelemetry service named after its component (``httpserver``, ``api``, ``preprocess``,
…), with its instance id as ``service.instance.id``; the exporter reads the standard
``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout) and the resource
``OTEL_RESOURCE_ATTRIBUTES``. Spans go out in batches from a background thread
(``BatchSpanProcessor``), so a request never waits for the collector.

A stage's span is the child of the traceparent its call carried and becomes the current
OpenTelemetry span while its handler runs, so spans a component makes with the OpenTelemetry
API nest under it. This module also registers its provider as OpenTelemetry's global one.
"""

from __future__ import annotations

from opentelemetry import context as otel_context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from mlcloud.tracing import TraceParent

INSTRUMENTATION = "mlcloud"


class OtelSpan:
    """One stage's span, current in OpenTelemetry's context until :meth:`end`."""

    __slots__ = ("_span", "_token", "traceparent")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        context = span.get_span_context()
        self.traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def set_attribute(self, name: str, value: str | int) -> None:
        self._span.set_attribute(name, value)

    def failed(self, kind: str, message: str) -> None:
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        otel_context.detach(self._token)
        self._span.end()


class OtelTracer:
    """The :class:`mlcloud.tracing.Tracer` of a process that exports its spans.

    ``exporter``: where spans go (default OTLP/HTTP as configured by the environment); a test
    passes an in-memory one, whose spans are then handed over at once (no batching thread).
    """

    def __init__(self, service: str, instance_id: str, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create({"service.name": service, "service.namespace": "mlcloud",
                                    "service.instance.id": instance_id})
        self.provider = TracerProvider(resource=resource)
        if exporter is None:
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(self.provider)
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer(INSTRUMENTATION)

    def start(self, name: str, traceparent: str, attributes: dict[str, str]) -> OtelSpan:
        parent = TraceParent.parse(traceparent) if traceparent else None
        context = None
        if parent is not None:
            remote = SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(parent.flags))
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        return OtelSpan(self.tracer.start_span(name, context, SpanKind.SERVER, attributes))

    def shutdown(self) -> None:
        self.provider.shutdown()
