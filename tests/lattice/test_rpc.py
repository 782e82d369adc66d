"""RPC over a real nats-server: round trip, deadline, typed errors, malformed input."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from mlcloud.errors import ClaimsError, CorruptInputTensor, MalformedMessage, MLCloudError, NoResponders, RpcTimeout
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.interfaces import InferenceInput, Tensor
from mlcloud.lattice import subjects, wire
from mlcloud.lattice.auth import Account
from mlcloud.lattice.connect import flush
from mlcloud.lattice.grants import Grant, Signer, Verifier
from mlcloud.lattice.rpc import Handler, RpcClient, RpcServer
from mlcloud.lattice.wire import Forward, Invocation

# Grants are checked against an account's key: the chains here start as the component MAPI.
ACCOUNT = Account(KeyPair.generate(KeyKind.ACCOUNT))
SIGNER = Signer(ACCOUNT.user("MAPI"))
VERIFIER = Verifier(ACCOUNT.public_key)


async def serve(nc: NATS, target: str, handler: Handler, **options: Any) -> RpcServer:
    """A started server of ``target`` (as the component MSTAGE) that takes MAPI's grants."""
    return await RpcServer(nc, target, handler, identity="MSTAGE", verifier=VERIFIER, **options).start()


def rpc_client(nc: NATS, *, caller: str, timeout: float) -> RpcClient:
    return RpcClient(nc, caller=caller, timeout=timeout, signer=SIGNER)


async def test_round_trip_keeps_types_and_bytes(nc):
    seen: list[Invocation] = []

    async def handler(invocation: Invocation) -> Tensor:
        seen.append(invocation)
        request = invocation.payload(InferenceInput)
        return Tensor(dimensions=request.tensor.dimensions, value_types=request.tensor.value_types,
                      data=request.tensor.data[::-1])

    server = await serve(nc, "t.rpc", handler, queue="t")
    client = rpc_client(nc, caller="tester", timeout=2)
    tensor = Tensor(dimensions=[1, 4], value_types=["ValueU8"], data=bytes([1, 2, 3, 4]))
    result = await client.call("t.rpc", "Op.Do", InferenceInput(model="m", tensor=tensor), Tensor, invocation_id="abc")
    assert result.data == bytes([4, 3, 2, 1])
    assert seen[0].caller == "tester" and seen[0].id == "abc" and seen[0].op == "Op.Do"
    await server.stop()


async def test_deadline_raises_rpc_timeout(nc):
    async def slow(invocation: Invocation) -> None:
        await asyncio.sleep(5)

    server = await serve(nc, "t.slow", slow)
    client = rpc_client(nc, caller="tester", timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RpcTimeout) as info:
        await client.call("t.slow", "Op.Slow", {})
    assert 0.25 < loop.time() - started < 2
    assert isinstance(info.value, TimeoutError)  # also the builtin it resembles
    server._tasks.clear()  # the sleeping handler is abandoned on purpose
    await server.stop()


async def test_no_responders(nc):
    client = rpc_client(nc, caller="tester", timeout=1)
    with pytest.raises(NoResponders):
        await client.call("t.nobody", "Op.X", {})


async def test_typed_error_is_rebuilt_on_the_caller_side(nc):
    async def failing(invocation: Invocation) -> None:
        raise CorruptInputTensor("tensor of dimensions [1, 4] needs 16 bytes, got 3")

    server = await serve(nc, "t.fail", failing)
    with pytest.raises(CorruptInputTensor, match="needs 16 bytes"):
        await rpc_client(nc, caller="t", timeout=2).call("t.fail", "Op.X", {})
    await server.stop()


async def test_unexpected_exception_becomes_an_error_reply_and_server_keeps_serving(nc):
    calls = 0

    async def buggy(invocation: Invocation) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("division by zero")
        return calls

    server = await serve(nc, "t.buggy", buggy)
    client = rpc_client(nc, caller="t", timeout=2)
    with pytest.raises(MLCloudError, match="ZeroDivisionError: division by zero"):
        await client.call("t.buggy", "Op.X", {})
    assert await client.call("t.buggy", "Op.X", {}) == 2
    await server.stop()


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"not msgpack at all", msgspec.msgpack.encode([1, 2]),
                                     msgspec.msgpack.encode({"op": 5})])
async def test_malformed_msgpack_gets_an_error_reply_and_crashes_nothing(nc, garbage):
    async def echo(invocation: Invocation) -> object:
        return invocation.payload(object)

    server = await serve(nc, "t.echo", echo)
    reply = await nc.request(subjects.call("t.echo", "t"), garbage, timeout=2)
    with pytest.raises(MalformedMessage):
        wire.decode_reply(reply.data)
    client = rpc_client(nc, caller="t", timeout=2)
    assert await client.call("t.echo", "Op.Echo", {"still": "alive"}) == {"still": "alive"}
    await server.stop()


async def test_payload_of_the_wrong_shape_is_a_malformed_message(nc):
    async def typed(invocation: Invocation) -> None:
        invocation.payload(InferenceInput)

    server = await serve(nc, "t.typed", typed)
    with pytest.raises(MalformedMessage, match="InferenceInput"):
        await rpc_client(nc, caller="t", timeout=2).call("t.typed", "Op.X", {"model": 3})
    await server.stop()


async def test_queue_group_spreads_calls_over_servers(nc):
    counts = {"a": 0, "b": 0}

    def make(name):
        async def handler(invocation: Invocation) -> str:
            counts[name] += 1
            return name
        return handler

    servers = [await serve(nc, "t.q", make(n), queue="q") for n in counts]
    client = rpc_client(nc, caller="t", timeout=2)
    await asyncio.gather(*(client.call("t.q", "Op.X", {}) for _ in range(60)))
    assert counts["a"] > 5 and counts["b"] > 5 and sum(counts.values()) == 60
    for server in servers:
        await server.stop()


async def test_forward_sends_the_result_to_the_next_stage_which_answers_the_caller(nc, stage_nc):
    seen: list[Invocation] = []

    async def double(invocation: Invocation) -> Tensor:
        request = invocation.payload(Tensor)
        return Tensor(dimensions=request.dimensions, value_types=request.value_types, data=request.data * 2)

    async def predict(invocation: Invocation) -> dict:
        seen.append(invocation)
        request = invocation.payload(InferenceInput)
        return {"model": request.model, "bytes": len(request.tensor.data)}

    first = await serve(stage_nc, "t.stage1", double)
    second = await serve(stage_nc, "t.stage2", predict)
    client = rpc_client(nc, caller="caller", timeout=2)
    forward = Forward(target="t.stage2", op="Op.Predict", field="tensor", msg={"model": "m"})
    tensor = Tensor(dimensions=[4], value_types=["ValueU8"], data=bytes(4))
    answer = await client.call("t.stage1", "Op.Double", tensor, forward=forward, invocation_id="inv-1")
    assert answer == {"model": "m", "bytes": 8}
    assert (seen[0].caller, seen[0].id, seen[0].op) == ("MAPI", "inv-1", "Op.Predict")  # the grant's originator
    await first.stop()
    await second.stop()


async def test_forward_errors_reach_the_caller_from_either_stage_and_a_missing_stage_at_once(nc, stage_nc):
    async def fails(invocation: Invocation) -> None:
        raise CorruptInputTensor("stage one refuses")

    async def passes(invocation: Invocation) -> int:
        return 1

    async def second_fails(invocation: Invocation) -> None:
        raise CorruptInputTensor("stage two refuses")

    servers = [await serve(stage_nc, "t.f1", fails), await serve(stage_nc, "t.p1", passes),
               await serve(stage_nc, "t.f2", second_fails)]
    client = rpc_client(nc, caller="caller", timeout=5)
    to_f2 = Forward(target="t.f2", op="Op.X", field="x")
    with pytest.raises(CorruptInputTensor, match="stage one"):
        await client.call("t.f1", "Op.X", {}, forward=to_f2)
    with pytest.raises(CorruptInputTensor, match="stage two"):
        await client.call("t.p1", "Op.X", {}, forward=to_f2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoResponders, match="t.nobody"):
        await client.call("t.p1", "Op.X", {}, forward=Forward(target="t.nobody", op="Op.Y", field="x"))
    assert loop.time() - started < 1, "a missing stage is reported by the stage before it, not at the deadline"
    for server in servers:
        await server.stop()


async def test_an_answer_that_cannot_be_encoded_is_an_error_at_once(nc):
    async def unencodable(invocation: Invocation) -> object:
        return object()

    server = await serve(nc, "t.odd", unencodable)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(MLCloudError, match="cannot send the answer"):
        await rpc_client(nc, caller="t", timeout=5).call("t.odd", "Op.X", {})
    assert loop.time() - started < 2
    await server.stop()


async def test_a_chain_of_forwards_passes_each_result_on_and_the_last_stage_answers(nc, stage_nc):
    calls: list[tuple[str, Any]] = []

    async def stage(name: str, invocation: Invocation) -> dict:
        payload = invocation.payload(dict)
        calls.append((name, payload))
        return {"tensor": payload.get("x", 0) + 1, "result": "Success"}

    servers = [await serve(stage_nc, f"t.c{i}", functools.partial(stage, f"c{i}")) for i in range(3)]
    chain = Forward(target="t.c1", op="Op.B", field="x", pick="tensor", msg={"k": "b"}).followed_by(
        Forward(target="t.c2", op="Op.C", field="x", pick="tensor", msg={"k": "c"}))
    answer = await rpc_client(nc, caller="caller", timeout=2).call("t.c0", "Op.A", {"x": 10}, forward=chain)
    assert answer == {"tensor": 13, "result": "Success"}
    assert calls == [("c0", {"x": 10}), ("c1", {"k": "b", "x": 11}), ("c2", {"k": "c", "x": 12})]
    await servers[1].stop()  # the middle stage goes away: the first stage says so at once
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoResponders, match=r"t\.c1\.MSTAGE \(Op\.B\)"):
        await rpc_client(nc, caller="caller", timeout=5).call("t.c0", "Op.A", {"x": 10}, forward=chain)
    assert loop.time() - started < 1
    for server in servers:
        await server.stop()


async def test_a_chain_that_does_not_answer_in_time_names_every_stage(nc, stage_nc):
    async def slow(invocation: Invocation) -> dict:
        await asyncio.sleep(0.6)
        return {}

    async def quick(invocation: Invocation) -> dict:
        return {"tensor": 1}

    servers = [await serve(stage_nc, "t.q", quick), await serve(stage_nc, "t.slow", slow)]
    chain = Forward(target="t.slow", op="Op.Slow", field="x", pick="tensor")
    with pytest.raises(RpcTimeout, match="Op.Quick → Op.Slow on wasmbus.rpc.t.q.caller did not answer within 0.3 s"):
        await rpc_client(nc, caller="caller", timeout=0.3).call("t.q", "Op.Quick", {}, forward=chain)
    for server in servers:
        await server.stop()


async def test_a_stage_whose_result_lacks_the_picked_field_fails_the_call_at_once(nc, stage_nc):
    async def no_tensor(invocation: Invocation) -> dict:
        return {"result": "Success"}

    server = await serve(stage_nc, "t.nt", no_tensor)
    forward = Forward(target="t.never", op="Op.Next", field="tensor", pick="tensor")
    with pytest.raises(MLCloudError, match="Op.Next needs the 'tensor'"):
        await rpc_client(nc, caller="caller", timeout=5).call("t.nt", "Op.X", {}, forward=forward)
    await server.stop()


async def test_a_chain_published_without_a_reply_runs_every_stage_and_waits_for_no_receipt(nc, stage_nc):
    done = asyncio.Event()

    async def first(invocation: Invocation) -> dict:
        return {"tensor": 1}

    async def last(invocation: Invocation) -> None:
        done.set()

    servers = [await serve(stage_nc, "t.n1", first, ack_timeout=30),
               await serve(stage_nc, "t.n2", last)]
    chain = Forward(target="t.n2", op="Op.Last", field="x", pick="tensor")
    grant = SIGNER.grant("i", chain.stages(), 5)
    await nc.publish(subjects.call("t.n1", "c"), wire.encode_request("Op.First", {}, invocation_id="i", forward=chain,
                                                                     grant=grant))
    await asyncio.wait_for(done.wait(), 2)
    await asyncio.wait_for(asyncio.gather(*(server.stop() for server in servers)), 2)  # no 30 s receipt wait


async def test_a_stage_that_answers_its_request_instead_of_reply_to_still_reaches_the_caller(nc, stage_nc):
    """An older mlcloud stage knows no ``reply_to``: it answers the forwarding stage, which passes it on."""

    async def first(invocation: Invocation) -> dict:
        return {"tensor": 7}

    async def old_stage(msg) -> None:
        request = wire.decode_request(msg.data)
        await msg.respond(wire.encode_reply({"got": request.payload(dict)["x"]}))

    server = await serve(stage_nc, "t.o1", first)
    await stage_nc.subscribe(subjects.forwarded("t.o2", "*"), cb=old_stage)
    await flush(stage_nc)
    chain = Forward(target="t.o2", op="Op.Old", field="x", pick="tensor")
    assert await rpc_client(nc, caller="caller", timeout=2).call("t.o1", "Op.New", {}, forward=chain) == {"got": 7}
    await server.stop()


async def test_a_forwarded_call_is_served_only_with_the_originators_grant_for_that_stage(nc, stage_nc):
    callers: list[str] = []

    async def record(invocation: Invocation) -> dict:
        callers.append(invocation.caller)
        return {"tensor": 1}

    servers = [await serve(stage_nc, "t.g1", record), await serve(stage_nc, "t.g2", record)]
    chain = Forward(target="t.g2", op="Op.B", field="x", pick="tensor")

    async def answer(grant: Grant | None, invocation_id: str) -> object:
        data = wire.encode_request("Op.A", {}, invocation_id=invocation_id, forward=chain, grant=grant)
        return wire.decode_reply((await nc.request(subjects.call("t.g1", "MAPI"), data, timeout=2)).data)

    with pytest.raises(ClaimsError, match="without a grant"):
        await answer(None, "i1")
    with pytest.raises(ClaimsError, match="does not cover"):
        await answer(SIGNER.grant("i2", [("t.elsewhere", "Op.B")], 5), "i2")
    with pytest.raises(ClaimsError, match="does not cover"):
        await answer(SIGNER.grant("another call", chain.stages(), 5), "i3")
    stranger = Signer(Account(KeyPair.generate(KeyKind.ACCOUNT)).user("MAPI"))
    with pytest.raises(ClaimsError, match="not issued by"):
        await answer(stranger.grant("i4", chain.stages(), 5), "i4")
    assert callers == ["MAPI"] * 4  # the first stage ran each time (called as MAPI); the second never did
    assert await rpc_client(nc, caller="MAPI", timeout=2).call("t.g1", "Op.A", {}, forward=chain) == {"tensor": 1}
    assert callers[-1] == "MAPI"  # the second stage's caller: the originator, not the stage that forwarded
    for server in servers:
        await server.stop()
