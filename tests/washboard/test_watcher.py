"""The watcher's pure parts: slow pages."""

from __future__ import annotations

from mlcloud.washboard.watcher import SUBSCRIBER_BACKLOG, Subscriber


async def test_a_page_that_falls_behind_is_told_to_reconnect():
    subscriber = Subscriber()
    for _ in range(SUBSCRIBER_BACKLOG):
        assert subscriber.offer(b"x")
    assert subscriber.offer(b"one too many") is False
    messages = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
    assert messages[-1] is None and len(messages) == SUBSCRIBER_BACKLOG + 1
