"""Ending background tasks: a service's stop must not wait for ever on a task that lost its cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from mlcloud.lattice.lifecycle import cancel_and_wait


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
