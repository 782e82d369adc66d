"""The lifecycle of long-lived objects (host, RPC server, washboard watcher): one state enum, one exit stack.

A :class:`Service` starts once: :meth:`Service._start` opens what it needs in order and registers
each undo on an :class:`~contextlib.AsyncExitStack`. When a step fails, what was opened before it
is closed in reverse at once (a failed start leaks no connection); :meth:`Service.stop` does the
same for a running service, and background tasks are awaited after they are cancelled.

A :class:`RestartBackoff` is the one rule for how long a supervisor waits before starting a dead
process again: both the host's instances and ``mlcloud up``'s servers follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Iterable
from typing import Self

from mlcloud.errors import HostError

RECANCEL_AFTER = 1.0  # seconds a cancelled task may take to end before it is cancelled again
HEALTHY_RESET_AFTER = 30.0  # seconds of uptime after which a restart back-off starts over


class RestartBackoff:
    """Exponential back-off between restarts of a process that keeps dying, reset once it ran a while.

    Call :meth:`started` when the process starts and :meth:`next_delay` once it has died: the
    first delay is ``first``, each one after doubles up to ``most``, and a process that ran for
    ``HEALTHY_RESET_AFTER`` seconds starts over from ``first`` (a crash a day is not a crash loop).
    Restarts that fail (no :meth:`started` between two delays) keep doubling.
    """

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._delay = first
        self._started: float | None = None

    def started(self) -> None:
        self._started = time.monotonic()

    def next_delay(self) -> float:
        if self._started is not None and time.monotonic() - self._started > HEALTHY_RESET_AFTER:
            self._delay = self.first
        self._started = None
        delay, self._delay = self._delay, min(self._delay * 2, self.most)
        return delay


class State(enum.StrEnum):
    """Where a :class:`Service` is in its life (its ``lifecycle`` attribute)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Service:
    """Base of long-lived objects: an async context manager that starts once and stops once."""

    def __init__(self) -> None:
        self.lifecycle = State.NEW
        self._exit_stack = contextlib.AsyncExitStack()
        self._stopped = asyncio.Event()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Open what the service needs, in order, pushing each undo onto ``stack``."""
        raise NotImplementedError

    async def start(self) -> Self:
        if self.lifecycle is not State.NEW:
            raise HostError(f"{type(self).__name__} is {self.lifecycle}; it starts only once")
        self.lifecycle = State.STARTING
        try:
            await self._start(self._exit_stack)
        except BaseException:
            await self._close()
            raise
        self.lifecycle = State.RUNNING
        return self

    async def stop(self) -> None:
        """Undo the start in reverse; a second caller waits for the first to finish."""
        if self.lifecycle in (State.STOPPING, State.STOPPED):
            await self._stopped.wait()
            return
        await self._close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close(self) -> None:
        self.lifecycle = State.STOPPING
        try:
            await self._exit_stack.aclose()
        finally:
            self.lifecycle = State.STOPPED
            self._stopped.set()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel ``tasks`` (except the caller's own) and wait until each has ended.

    A task still running :data:`RECANCEL_AFTER` seconds later is cancelled again: on Python 3.11
    ``asyncio.wait_for`` (which nats-py's requests use) returns instead of raising
    ``CancelledError`` when what it waits for completes in the same turn of the loop as the
    cancellation (CPython gh-86296, fixed in 3.12), and a loop that lost its one cancellation
    would keep its owner's stop waiting for ever.
    """
    current = asyncio.current_task()
    ending = [task for task in tasks if task is not current]
    pending = {task for task in ending if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
    await asyncio.gather(*ending, return_exceptions=True)  # all ended: this only collects their errors
