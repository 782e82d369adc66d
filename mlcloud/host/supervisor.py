"""Supervised child processes: one per actor or provider instance.

An :class:`Instance` starts ``python -m mlcloud.host.runner``, watches it, and when it dies
unasked restarts it with exponential back-off (reset after it has run healthily for a while).
Stopping asks with SIGTERM, waits ``stop_grace`` seconds, then kills. Every change of status is
reported through ``on_change`` so the host can publish events, and an unasked exit first
through ``on_exit`` so the host can tell the callers holding calls to it (at once, before any
back-off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

import msgspec

from mlcloud.host.spec import SPEC_ENV, InstanceSpec
from mlcloud.lattice.control import InstanceInfo, InstanceStatus
from mlcloud.lattice.lifecycle import RestartBackoff
from mlcloud.listeners import ListenerBroker
from mlcloud.settings import Settings

log = logging.getLogger(__name__)

_HOST_SECRETS = {"MLCLOUD_NATS_CREDS", "MLCLOUD_NATS_ACCOUNT_SEED"}


class Instance:
    def __init__(
        self,
        spec: InstanceSpec,
        settings: Settings,
        on_change: Callable[[Instance, str], Awaitable[None]],
        on_exit: Callable[[Instance], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.on_change = on_change
        self.on_exit = on_exit
        self.status = InstanceStatus.AWAITING
        self.status_since = time.time()
        self.restarts = 0
        self.last_exit: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The instance's listening sockets, held across its restarts (mlcloud.listeners).
        self.listeners: ListenerBroker | None = None

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self.listeners = ListenerBroker(self.spec.name)
        self.listeners.attach()
        self._task = asyncio.create_task(self._supervise(), name=f"instance:{self.spec.name}:{self.instance_id[:8]}")

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def mark_ready(self) -> None:
        self._ready.set()
        await self._set_status(InstanceStatus.HEALTHY, "ready")

    async def mark_health(self, healthy: bool, message: str = "") -> None:
        if self.status in (InstanceStatus.STOPPED, InstanceStatus.AWAITING):
            return
        await self._set_status(InstanceStatus.HEALTHY if healthy else InstanceStatus.UNHEALTHY, message)

    async def stop(self) -> None:
        """Stop supervising (at once, even mid back-off), then stop the process: ask, then kill."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self.settings.stop_grace)
            except TimeoutError:
                log.warning("%s did not stop in %.0f s; killing it", self.spec.name, self.settings.stop_grace)
                process.kill()
                await process.wait()
        if self.listeners is not None:
            self.listeners.close()
        await self._set_status(InstanceStatus.STOPPED, "stopped")

    async def _until_stopped(self, awaitable: Awaitable[object]) -> bool:
        """Wait for ``awaitable`` unless stopping comes first; True when it finished."""
        work = asyncio.ensure_future(awaitable)
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stopping):
            if not task.done():
                task.cancel()
        return work.done() and not work.cancelled()

    async def _supervise(self) -> None:
        backoff = RestartBackoff(self.settings.restart_backoff, self.settings.restart_backoff_max)
        while not self._stopping.is_set():
            backoff.started()
            self._ready.clear()
            try:
                await self._spawn()
            except OSError as exc:  # e.g. its folder vanished: report it and try again later
                log.error("%s: cannot start an instance: %s", self.spec.name, exc)
                await self._set_status(InstanceStatus.UNHEALTHY, f"cannot start: {exc}")
            else:
                assert self.process is not None
                if not await self._until_stopped(self.process.wait()):
                    return
                self.last_exit = self.process.returncode
                await self.on_exit(self)
                await self._set_status(InstanceStatus.UNHEALTHY, f"process exited with code {self.last_exit}")
            delay = backoff.next_delay()
            log.warning("%s instance %s exited (%s); restarting in %.1f s",
                        self.spec.name, self.instance_id[:8], self.last_exit, delay)
            if not await self._until_stopped(asyncio.sleep(delay)):
                return
            self.restarts += 1
            await self.on_change(self, "restarted")

    async def _spawn(self) -> None:
        env = {
            # The host's own credentials and the account seed stay with the host: the instance
            # connects with the credentials in its spec.
            **{k: v for k, v in os.environ.items() if k not in _HOST_SECRETS},
            **self.settings.replace(nats_creds=None, nats_account_seed=None).to_env(),
            SPEC_ENV: msgspec.json.encode(self.spec).decode(),
            # A verified artifact folder must stay exactly as it was verified.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        assert self.listeners is not None
        env.update(self.listeners.child_env())
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlcloud.host.runner", env=env, cwd=self.spec.folder,
            pass_fds=[self.listeners.child_end.fileno()],
        )
        await self._set_status(InstanceStatus.AWAITING, f"started pid {self.process.pid}")

    async def _set_status(self, status: InstanceStatus, reason: str) -> None:
        if status == self.status and status is not InstanceStatus.AWAITING:
            return
        self.status = status
        self.status_since = time.time()
        await self.on_change(self, reason)

    def describe(self) -> InstanceInfo:
        return InstanceInfo(instance_id=self.instance_id, pid=self.pid, status=self.status,
                            status_since=self.status_since, restarts=self.restarts)
