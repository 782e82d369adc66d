"""The watcher's pure parts: reading Status replies and slow pages."""

from __future__ import annotations

import msgspec
import pytest

from mlcloud.interfaces import ModelInfo
from mlcloud.washboard.watcher import SUBSCRIBER_BACKLOG, Subscriber, model_info


def test_status_reply_items_are_read_in_wire_or_field_names():
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(ModelInfo(name="plus3", bindle_id="plus3/0.1.0", p99_ms=3.0)))
    assert wire["bindleId"] == "plus3/0.1.0"
    assert model_info(wire)["bindle_id"] == "plus3/0.1.0" and model_info(wire)["p99_ms"] == 3.0
    assert model_info({"name": "id", "bindle_id": "identity_model/0.2.0", "state": "READY"})["state"] == "READY"
    with pytest.raises(msgspec.ValidationError):
        model_info({"name": "no bindle id"})


async def test_a_page_that_falls_behind_is_told_to_reconnect():
    subscriber = Subscriber()
    for _ in range(SUBSCRIBER_BACKLOG):
        assert subscriber.offer(b"x")
    assert subscriber.offer(b"one too many") is False
    messages = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
    assert messages[-1] is None and len(messages) == SUBSCRIBER_BACKLOG + 1
