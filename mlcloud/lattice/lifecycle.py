"""The lifecycle of long-lived objects (host, RPC server, washboard watcher): one state enum, one exit stack.

A :class:`Service` starts once: :meth:`Service._start` opens what it needs in order and registers
each undo on an :class:`~contextlib.AsyncExitStack`. When a step fails, what was opened before it
is closed in reverse at once (a failed start leaks no connection); :meth:`Service.stop` does the
same for a running service, and background tasks are awaited after they are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterable
from typing import Self

from mlcloud.errors import HostError


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
    """Cancel ``tasks`` (except the caller's own) and wait until each has ended."""
    current = asyncio.current_task()
    pending = [task for task in tasks if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
