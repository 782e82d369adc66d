"""The request id and trace context across real RPC hops (mlcloud.tracing in mlcloud.lattice.rpc):
kept by nested calls and forwarded chain stages, and, with spans exported (here to memory), one
span per stage, each the child of the stage that called it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mlcloud import tracing
from mlcloud.errors import CorruptInputTensor, MalformedMessage
from mlcloud.lattice import subjects, wire
from mlcloud.lattice.rpc import Died, RpcClient
from mlcloud.lattice.wire import Forward, Invocation
from tests.lattice.test_rpc import rpc_client, serve

CLIENT_SPAN = "00f067aa0ba902b7"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", "instance", exporter=exporter)
    yield exporter
    tracing.shutdown()


async def chain(nc, stage_nc, seen: list[tuple[str, tracing.Trace, Invocation]]):
    """Servers: t.first (which also calls t.side itself), then forwarded t.second; started."""
    inner = RpcClient(stage_nc, caller="MSTAGE", timeout=2)

    async def first(invocation: Invocation) -> int:
        seen.append(("first", tracing.current(), invocation))
        return await inner.call("t.side", "Op.Side", {}) + 1

    async def side(invocation: Invocation) -> int:
        seen.append(("side", tracing.current(), invocation))
        return 1

    async def second(invocation: Invocation) -> int:
        seen.append(("second", tracing.current(), invocation))
        if invocation.payload(dict)["value"] > 10:
            raise CorruptInputTensor("too large")
        return invocation.payload(dict)["value"] * 10

    return [await serve(stage_nc, "t.first", first), await serve(stage_nc, "t.side", side),
            await serve(stage_nc, "t.second", second)]


FORWARD = Forward(target="t.second", op="Op.Second", field="value")


async def test_nested_calls_and_forwarded_stages_keep_the_request_id(nc, stage_nc):
    seen: list[tuple[str, tracing.Trace, Invocation]] = []
    servers = await chain(nc, stage_nc, seen)
    client = rpc_client(nc, caller="caller", timeout=2)
    sent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    with tracing.serving("GET", "req-1", sent):
        assert await client.call("t.first", "Op.First", {}, forward=FORWARD) == 20
    assert {name: (trace.request_id, invocation.id) for name, trace, invocation in seen} == {
        name: ("req-1", "req-1") for name in ("first", "side", "second")}
    # No spans exported: every hop carries the traceparent it was given.
    assert {trace.traceparent for _, trace, _ in seen} == {sent}
    # Outside any request a call gets an id of its own, as before.
    seen.clear()
    await client.call("t.side", "Op.Side", {})
    assert seen[0][2].id != "req-1" and len(seen[0][2].id) == 32
    for server in servers:
        await server.stop()


async def test_each_stage_is_a_span_child_of_the_stage_that_called_it(nc, stage_nc, spans):
    seen: list[tuple[str, tracing.Trace, Invocation]] = []
    servers = await chain(nc, stage_nc, seen)
    client = rpc_client(nc, caller="caller", timeout=2)
    with tracing.serving("GET", "", f"00-{TRACE_ID}-{CLIENT_SPAN}-01") as root:
        assert await client.call("t.first", "Op.First", {}, forward=FORWARD) == 20
    for server in servers:
        await server.stop()
    by_name = {span.name: span for span in spans.get_finished_spans()}
    assert set(by_name) == {"GET", "Op.First", "Op.Side", "Op.Second"}
    assert {span.context.trace_id for span in by_name.values()} == {int(TRACE_ID, 16)}
    parent_of = {name: span.parent.span_id for name, span in by_name.items() if span.parent is not None}
    ids = {name: span.context.span_id for name, span in by_name.items()}
    assert parent_of == {"GET": int(CLIENT_SPAN, 16), "Op.First": ids["GET"], "Op.Side": ids["Op.First"],
                         "Op.Second": ids["Op.First"]}
    assert by_name["GET"].parent.is_remote and by_name["Op.First"].kind is SpanKind.SERVER
    assert {s.attributes["mlcloud.request_id"] for s in by_name.values()} == {TRACE_ID}
    assert root.trace.request_id == TRACE_ID
    # The stages' handlers saw their own span as the traceparent of the calls they make.
    assert {name: trace.traceparent[36:52] for name, trace, _ in seen} == {
        name: f"{ids['Op.' + name.title()]:016x}" for name in ("first", "side", "second")}


async def test_a_failed_stage_is_a_failed_span(nc, stage_nc, spans):
    servers = await chain(nc, stage_nc, [])
    client = rpc_client(nc, caller="caller", timeout=2)
    with pytest.raises(CorruptInputTensor):
        await client.call("t.second", "Op.Second", {"value": 11})
    for server in servers:
        await server.stop()
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "CorruptInputTensor"


async def test_an_invocation_id_that_could_forge_a_log_line_is_refused(nc, stage_nc):
    servers = await chain(nc, stage_nc, seen := [])
    reply = await nc.request(subjects.call("t.side", "caller"),
                             wire.encode_request("Op.Side", {}, invocation_id="x\n2026 INFO forged"), timeout=2)
    with pytest.raises(MalformedMessage):
        wire.decode_reply(reply.data)
    assert seen == []
    for server in servers:
        await server.stop()


async def test_a_call_made_again_after_its_server_died_keeps_its_request_id(nc, stage_nc):
    seen: list[tuple[str, str]] = []

    async def handler(invocation: Invocation) -> int:
        seen.append((invocation.id, invocation.trace))
        return 1

    client = RpcClient(nc, caller="caller", timeout=5)
    await client.follow_deaths("t")
    # The lone instance of t.back died: the call is tried again until it is back.
    await nc.publish(subjects.instance_died("t"), msgspec.json.encode(Died("i1", ["t.back"])))
    # flush() returns once the server has the notice, not once the client's subscription task has
    # handled it: until then the call would be a plain NoResponders.
    async with asyncio.timeout(5):
        while "t.back" not in client._died_at:
            await asyncio.sleep(0.01)
    sent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    with tracing.serving("GET", "req-again", sent):
        call = asyncio.ensure_future(client.call("t.back", "Op.Back", {}, idempotent=True))
        await asyncio.sleep(0.2)
        assert not call.done()
        server = await serve(stage_nc, "t.back", handler)
        assert await call == 1
    assert seen == [("req-again", sent)]
    await server.stop()
