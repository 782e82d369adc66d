"""Spans exported from the real stack (issue 16 item 4): with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set,
every stage of a request exports its span over OTLP/HTTP to a receiver on 127.0.0.1, all in
the trace the client's traceparent named, each the child of the stage before it.

One stack per module, its instances started with the OTLP variables in their environment.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mlcloud.servers import running_app
from mlcloud.testing.stack import PROJECT_DIR, running_stack

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CAT = (PROJECT_DIR / "images" / "cat.jpg").read_bytes()


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []

    async def export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        sent = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in sent.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((attributes["service.name"], span) for span in scope_spans.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def trace(self, trace_id: str, services: set[str], timeout: float = 15.0) -> dict[str, Span]:
        """The spans of ``trace_id`` by service, once each of ``services`` has sent one."""
        async with asyncio.timeout(timeout):
            while True:
                found = {service: span for service, span in self.spans if span.trace_id.hex() == trace_id}
                if services <= set(found):
                    return found
                await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    async with running_app(app, "127.0.0.1:0", "the OTLP receiver", access_log=None) as address:
        # The host's instances inherit the environment it has when it starts them.
        saved = {k: os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")}
        os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{address}", OTEL_BSP_SCHEDULE_DELAY="100")
        try:
            yield receiver
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(receiver, tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


async def test_every_stage_exports_a_span_in_the_clients_trace_each_the_child_of_the_one_before(stack, receiver):
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as http:
        response = await http.put("/mobilenetv27/matches", content=CAT,
                                  headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert response.status_code == 200, response.text
    spans = await receiver.trace(trace_id, {"httpserver", "api", "preprocess", "mlinference", "postprocess"})
    assert {service: span.name for service, span in spans.items()} == {
        "httpserver": "PUT", "api": "HttpServer.HandleRequest", "preprocess": "Preprocess.Convert",
        "mlinference": "MlInference.Predict", "postprocess": "Postprocess.Matches"}
    parents = {service: span.parent_span_id.hex() for service, span in spans.items()}
    ids = {service: span.span_id.hex() for service, span in spans.items()}
    assert parents == {"httpserver": client_span, "api": ids["httpserver"], "preprocess": ids["api"],
                       "mlinference": ids["preprocess"], "postprocess": ids["mlinference"]}
    # The response names the httpserver's span as the parent of what the client does next.
    assert response.headers["traceparent"] == f"00-{trace_id}-{ids['httpserver']}-01"
    assert response.headers["x-request-id"] == trace_id
    for span in spans.values():
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes["mlcloud.request_id"] == trace_id


async def test_a_request_without_a_traceparent_starts_a_trace_named_by_its_request_id(stack, receiver):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as http:
        response = await http.put("/mobilenetv27/matches", content=CAT)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    spans = await receiver.trace(request_id, {"httpserver", "api", "postprocess"})
    assert spans["httpserver"].parent_span_id == b""
