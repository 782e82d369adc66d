"""Supervising the child servers ``mlcloud up`` starts: a nats-server or registry that dies is started again.

A :class:`ServerSupervisor` watches one :class:`ChildServer` (``NatsServer``, ``EmbeddedRegistry``)
and, when its process exits unasked, starts it again with the same arguments, port and data dir
after a short back-off (doubling while restarts fail or come quickly: the
:class:`~mlcloud.lattice.lifecycle.RestartBackoff` the host's instances follow too). Clients reconnect by themselves
(:func:`mlcloud.lattice.connect.connect` keeps trying). Each restart is logged and reported to
``on_restart`` (``mlcloud up`` publishes a ``server_restarted`` event). Stopping the supervisor
first stops the watching; stopping the server itself stays with its owner (ask, terminate, kill).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mlcloud.errors import MLCloudError
from mlcloud.lattice.control import ServerRestarted
from mlcloud.lattice.lifecycle import RestartBackoff, cancel_and_wait

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.1  # seconds before the first restart: a killed server is back well within 2 s
MAX_BACKOFF = 5.0


class ChildServer(Protocol):
    """A server run as a child process that can be started again where it was."""

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    async def wait_exit(self) -> int | None:
        """Return the exit code once the current process has ended."""
        ...

    async def restart(self) -> None:
        """Start the server again on the same port and data dir, after its process ended."""
        ...


class ServerSupervisor:
    """An async context manager restarting ``server`` whenever its process dies until the context exits."""

    def __init__(
        self,
        name: str,
        server: ChildServer,
        on_restart: Callable[[ServerRestarted], Awaitable[None]] | None = None,
        *,
        backoff: float = FIRST_BACKOFF,
        backoff_max: float = MAX_BACKOFF,
    ) -> None:
        self.name = name
        self.server = server
        self.on_restart = on_restart
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        # Held while the server starts again: a start cancelled half-way (the registry's runs in a
        # thread, which a cancellation does not stop) could race the owner's stop that follows.
        self._restarting = asyncio.Lock()

    async def __aenter__(self) -> ServerSupervisor:
        self._task = asyncio.create_task(self._supervise(), name=f"supervise:{self.name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            async with self._restarting:
                await cancel_and_wait([self._task])

    async def _supervise(self) -> None:
        backoff = RestartBackoff(self.backoff, self.backoff_max)
        while True:
            backoff.started()
            pid = self.server.pid
            code = await self.server.wait_exit()
            log.warning("%s (pid %s) exited with code %s; restarting it on %s", self.name, pid, code, self.server.url)
            while True:
                await asyncio.sleep(backoff.next_delay())
                try:
                    async with self._restarting:
                        await self.server.restart()
                    break
                except (MLCloudError, OSError) as exc:
                    log.error("%s: restart failed (%s); trying again", self.name, exc)
            self.restarts += 1
            log.warning("%s restarted on %s (pid %s, restart %d)", self.name, self.server.url, self.server.pid,
                        self.restarts)
            if self.on_restart is not None:
                event = ServerRestarted(server=self.name, url=self.server.url, pid=self.server.pid, exit_code=code,
                                        restarts=self.restarts)
                try:
                    await self.on_restart(event)
                except Exception:  # reporting a restart must not end the supervision
                    log.exception("%s: reporting the restart failed", self.name)
