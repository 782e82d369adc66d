"""Messages larger than max_payload travel through the lattice's object store, against a real nats-server
with NATS's default max_payload (1 MiB), as a server mlcloud did not start has."""

from __future__ import annotations

import os
import tracemalloc
import uuid

import msgspec
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mlcloud.errors import NoResponders, PayloadTooLarge
from mlcloud.lattice import subjects
from mlcloud.lattice.chunks import PIECE_SIZE, Chunks, is_chunked
from mlcloud.lattice.connect import flush
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.lattice.rpc import RpcClient, request
from mlcloud.lattice.wire import Forward, Invocation
from tests.lattice.test_rpc import SIGNER, serve

MB = 1024 * 1024


class Blob(msgspec.Struct):
    data: bytes
    note: str = ""


@pytest.fixture
async def nats_server(tmp_path_factory, nats_auth):
    async with NatsServer(tmp_path_factory.mktemp("nats"), port=0, auth=nats_auth, max_payload=MB) as server:
        yield server


@pytest.fixture
def lattice() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def stored_messages(nc: NATS, lattice: str) -> int:
    info = await nc.jetstream().stream_info(f"OBJ_{subjects.chunk_bucket(lattice)}")
    return info.state.messages


async def test_a_request_and_a_reply_past_max_payload_round_trip_and_leave_the_bucket_empty(nc, stage_nc, lattice):
    async def reverse(invocation: Invocation) -> Blob:
        blob = invocation.payload(Blob)
        return Blob(data=blob.data[::-1], note=invocation.caller)

    server = await serve(stage_nc, "t.big", reverse, chunks=Chunks(stage_nc, lattice))
    client = RpcClient(nc, caller="tester", timeout=10, chunks=Chunks(nc, lattice))
    payload = os.urandom(3 * MB)
    assert nc.max_payload == MB
    result = await client.call("t.big", "Op.Reverse", Blob(data=payload), Blob)
    assert result.data == payload[::-1] and result.note == "tester"
    assert await stored_messages(nc, lattice) == 0
    await server.stop()


async def test_small_messages_do_not_touch_the_bucket(nc, stage_nc, lattice):
    async def echo(invocation: Invocation) -> Blob:
        return invocation.payload(Blob)

    server = await serve(stage_nc, "t.small", echo, chunks=Chunks(stage_nc, lattice))
    client = RpcClient(nc, caller="tester", timeout=5, chunks=Chunks(nc, lattice))
    assert (await client.call("t.small", "Op.Echo", Blob(data=b"x" * 1000), Blob)).data == b"x" * 1000
    with pytest.raises(nats.js.errors.NotFoundError):  # never even made
        await stored_messages(nc, lattice)
    await server.stop()


async def test_a_chain_forwards_a_large_result_to_its_next_stage(nc, stage_nc, lattice):
    """A stage's result past max_payload goes on to the next stage through the bucket (with the
    receipt before it is read), and the last stage's large answer back to the caller."""
    async def grow(invocation: Invocation) -> Blob:
        return Blob(data=invocation.payload(Blob).data * 4)

    async def double(invocation: Invocation) -> Blob:
        return Blob(data=invocation.payload(Blob).data * 2, note="last")

    first = await serve(stage_nc, "t.grow", grow, chunks=Chunks(stage_nc, lattice))
    last = await serve(stage_nc, "t.double", double, chunks=Chunks(stage_nc, lattice))
    client = RpcClient(nc, caller="MAPI", timeout=10, signer=SIGNER, chunks=Chunks(nc, lattice))
    seed = os.urandom(MB // 2)
    result = await client.call("t.grow", "Op.Grow", Blob(data=seed), Blob,
                               forward=Forward(target="t.double", op="Op.Double", field="data", pick="data"))
    assert result.data == seed * 8 and result.note == "last"
    assert await stored_messages(nc, lattice) == 0
    await first.stop()
    await last.stop()


async def test_a_large_request_nobody_serves_is_no_responders_and_its_chunks_are_deleted(nc, lattice):
    client = RpcClient(nc, caller="tester", timeout=5, chunks=Chunks(nc, lattice))
    with pytest.raises(NoResponders):
        await client.call("t.nobody", "Op.X", Blob(data=bytes(2 * MB)))
    assert await stored_messages(nc, lattice) == 0


async def test_without_a_chunk_bucket_a_message_past_max_payload_is_payload_too_large(nc):
    client = RpcClient(nc, caller="tester", timeout=5)
    with pytest.raises(PayloadTooLarge, match="raise its max_payload"):
        await client.call("t.nobody", "Op.X", Blob(data=bytes(2 * MB)))


async def test_the_chunk_path_holds_at_most_one_more_copy_of_a_message(nc, stage_nc, lattice):
    """Sending streams from the caller's bytes; receiving reads into one buffer of the message's size.
    Beside that, pieces in flight (nats-py's buffers, the subscription's queue) take a few MB
    whatever the size (measured: +3.0 MB for 4 MB, +5.1 MB for 24 MB)."""
    size = 16 * MB
    data = os.urandom(size)
    sender, receiver = Chunks(nc, lattice), Chunks(stage_nc, lattice)
    await sender.open()
    await receiver.open()
    taken: list[bytearray] = []

    async def on_message(msg) -> None:
        assert is_chunked(msg) and not msg.data
        taken.append(await receiver.take(msg))
        await stage_nc.publish(msg.reply, b"ok")

    await stage_nc.subscribe("t.copies", cb=on_message)
    await flush(stage_nc)
    tracemalloc.start()
    try:
        headers = await sender.stow(data)
        _, sent_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        reply = await nc.request("t.copies", b"", timeout=10, headers=headers)
        _, received_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.data == b"ok" and taken[0] == data
    # A few pieces in flight (nats-py's piece buffer, the slice it publishes, its write buffer), whatever the size.
    assert sent_peak < 6 * PIECE_SIZE, f"stowing {size} bytes took {sent_peak} more"
    assert received_peak < size + 6 * MB, f"taking {size} bytes took {received_peak}"
    assert await stored_messages(nc, lattice) == 0


async def test_request_takes_a_chunked_reply(nc, stage_nc, lattice):
    big = os.urandom(2 * MB)
    replier = Chunks(stage_nc, lattice)

    async def answer(msg) -> None:
        await stage_nc.publish(msg.reply, b"", headers=await replier.stow(big))

    await stage_nc.subscribe("t.reply", cb=answer)
    await flush(stage_nc)
    assert await request(nc, "t.reply", "Op.R", b"q", timeout=5, chunks=Chunks(nc, lattice)) == big
    assert await stored_messages(nc, lattice) == 0


async def test_a_bucket_a_restarted_server_forgot_is_made_again(nc, stage_nc, lattice):
    """Its objects live in memory, so a restarted nats-server has lost the bucket: the next sender
    makes it again (as a deleted stream stands in for it here)."""
    async def echo(invocation: Invocation) -> Blob:
        return invocation.payload(Blob)

    server = await serve(stage_nc, "t.again", echo, chunks=Chunks(stage_nc, lattice))
    client = RpcClient(nc, caller="tester", timeout=10, chunks=Chunks(nc, lattice))
    payload = os.urandom(2 * MB)
    assert (await client.call("t.again", "Op.Echo", Blob(data=payload), Blob)).data == payload
    await nc.jetstream().delete_stream(f"OBJ_{subjects.chunk_bucket(lattice)}")
    assert (await client.call("t.again", "Op.Echo", Blob(data=payload), Blob)).data == payload
    assert await stored_messages(nc, lattice) == 0
    await server.stop()
