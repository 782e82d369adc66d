"""Ending background tasks (a service's stop must not wait for ever on a task that lost its cancellation)
and the restart back-off both supervisors follow."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mlcloud.lattice import lifecycle
from mlcloud.lattice.lifecycle import RestartBackoff, cancel_and_wait


async def test_a_loop_whose_wait_for_swallowed_the_cancellation_is_still_ended():
    """On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising ``CancelledError``
    when what it waits for completes in the same turn of the loop as the cancellation (CPython
    gh-86296). A host's health checks (nats-py's requests use ``wait_for``) and the washboard's
    poll loops met it when stopped just as an answer or an event came in, and the stop hung."""
    woken = asyncio.Event()

    async def poll() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), 60)
            woken.clear()

    task = asyncio.create_task(poll())
    await asyncio.sleep(0)  # the loop waits on the event
    woken.set()  # what it waits for completes in the same turn as the cancellation below
    async with asyncio.timeout(10):
        await cancel_and_wait([task])
    assert task.cancelled()


async def test_the_caller_is_not_cancelled_and_finished_tasks_are_fine():
    async def forever() -> None:
        await asyncio.Event().wait()

    async def done() -> None:
        pass

    finished = asyncio.create_task(done())
    await finished
    running = asyncio.create_task(forever())
    current = asyncio.current_task()
    assert current is not None
    await cancel_and_wait([finished, running, current])
    assert running.cancelled() and not current.cancelled()


def test_restart_backoff_doubles_while_a_process_keeps_dying_and_starts_over_after_a_healthy_run(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: now[0])
    backoff = RestartBackoff(0.5, 3.0)
    delays = []
    for _ in range(5):  # dies at once, every time
        backoff.started()
        delays.append(backoff.next_delay())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.started()
    now[0] += lifecycle.HEALTHY_RESET_AFTER + 1
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize("uptime", [0.0, lifecycle.HEALTHY_RESET_AFTER + 1])
def test_restarts_that_fail_keep_doubling_even_after_a_long_healthy_run(monkeypatch, uptime):
    now = [1000.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: now[0])
    backoff = RestartBackoff(0.1, 5.0)
    backoff.started()
    now[0] += uptime
    assert [backoff.next_delay() for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]  # no start in between
