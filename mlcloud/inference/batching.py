"""Adaptive batching: concurrent requests for one model stacked along dimension 0.

Modelled on MLServer's adaptive batcher, with the lesson of PERFORMANCE-NOTES: a fixed batch
wait halves throughput at concurrency 1, so a request that finds nobody else queued runs at once.
Only when a batch has started forming (two or more requests waiting together) does the batcher
wait, at most ``max_wait`` counted from the first request, for more to join, up to
``max_batch_size`` rows. Under load, requests that arrive while a batch computes form the next
one: the batch size adapts to the load without timers.

Requests are stacked only with requests of the same dtype and trailing shape; each caller gets
back its own rows of every output. A batch whose run fails fails exactly its callers. If the
batcher's worker dies (a bug, or it is cancelled), every waiting caller gets an error at once and
later calls are refused: nobody hangs.

A batch of more than one request is logged with the ids of the requests it carried
(:mod:`mlcloud.tracing`); a batch of one is its request's own stage.

The registry enables batching only for models whose batch dimension is symbolic.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlcloud import tracing
from mlcloud.errors import InferenceRuntimeError
from mlcloud.metrics import observe_execution

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(slots=True, eq=False)
class _Request:
    array: np.ndarray
    future: asyncio.Future[list[np.ndarray]]
    arrived: float
    request_id: str
    key: tuple[np.dtype[Any], tuple[int, ...]] = field(init=False)  # what may share a batch
    labels: tuple[str, str] = ("", "")  # (model, version) of its figures
    queued: float = field(default_factory=time.perf_counter)  # not ``arrived``: uvloop's clock has 1 ms steps

    def __post_init__(self) -> None:
        self.key = (self.array.dtype, self.array.shape[1:])


class AdaptiveBatcher:
    """Stacks concurrent ``submit`` calls into one ``run`` call, executed in ``executor``."""

    def __init__(
        self, run: RunBatch, *, executor: Executor | None, max_batch_size: int, max_wait: float,
        name: str = "model",
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.name = name
        self._queue: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._in_flight: list[_Request] = []
        self._dead: BaseException | None = None
        # In a context of its own: not that of the request whose call created the batcher.
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher:{name}",
                                                            context=contextvars.Context())
        self.batches = 0  # how many runs; tests and the bench read it

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return not self._queue and not self._in_flight

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._task.done()

    async def submit(self, array: np.ndarray, labels: tuple[str, str] = ("", "")) -> list[np.ndarray]:
        """``array``'s rows of the outputs; ``labels`` (model, version) name it in the figures."""
        if not self.alive:
            raise InferenceRuntimeError(f"the batcher of {self.name} has stopped: {self._dead!r}")
        loop = asyncio.get_running_loop()
        request = _Request(array, loop.create_future(), loop.time(), tracing.current().request_id, labels=labels)
        self._queue.append(request)
        self._arrived.set()
        return await request.future

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _worker(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                await self._execute(batch)
                self._in_flight = []
        except BaseException as exc:
            self._dead = exc
            error = InferenceRuntimeError(f"the batcher of {self.name} stopped")
            for request in [*self._in_flight, *self._queue]:
                if not request.future.done():
                    request.future.set_exception(error)
            self._queue.clear()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.error("batcher of %s died", self.name, exc_info=exc)

    async def _next_batch(self) -> list[_Request]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._queue.popleft()
        batch, rows = [first], len(first.array)
        self._in_flight = batch  # from here on, a death must fail these callers too
        rows = self._take(batch, rows)
        if len(batch) > 1 and self.max_wait > 0:
            # A batch is forming: give stragglers until the first request's deadline.
            loop = asyncio.get_running_loop()
            deadline = first.arrived + self.max_wait
            while rows < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                rows = self._take(batch, rows)
        return batch

    def _take(self, batch: list[_Request], rows: int) -> int:
        """Move queued requests that fit the batch into it; leave the others queued."""
        key = batch[0].key
        kept: collections.deque[_Request] = collections.deque()
        while self._queue:
            request = self._queue.popleft()
            if request.future.done():  # the caller gave up
                continue
            if request.key == key and rows + len(request.array) <= self.max_batch_size:
                batch.append(request)
                rows += len(request.array)
            else:
                kept.append(request)
        self._queue.extend(kept)
        return rows

    async def _execute(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.done()]
        if not batch:
            return
        loop = asyncio.get_running_loop()
        if len(batch) > 1:
            ids = " ".join(r.request_id or tracing.NO_REQUEST for r in batch)
            log.info("%s: a batch of %d requests: %s", self.name, len(batch), ids)
        try:
            stacked = batch[0].array if len(batch) == 1 else np.concatenate([r.array for r in batch])
            started = time.perf_counter()
            outputs = await loop.run_in_executor(self._executor, self._run, stacked)
            observe_execution([(*r.labels, started - r.queued) for r in batch], time.perf_counter() - started,
                              len(stacked))
            self.batches += 1
            results = self._split(outputs, [len(r.array) for r in batch])
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, result in zip(batch, results, strict=True):
            if not request.future.done():
                request.future.set_result(result)

    def _split(self, outputs: list[np.ndarray], sizes: list[int]) -> list[list[np.ndarray]]:
        if len(sizes) == 1:
            return [outputs]
        total = sum(sizes)
        offsets = np.cumsum(sizes)[:-1]
        per_output = []
        for output in outputs:
            if output.ndim == 0 or output.shape[0] != total:
                raise InferenceRuntimeError(
                    f"{self.name}: an output of shape {list(output.shape)} has no batch dimension "
                    f"of {total}; this model cannot be batched"
                )
            per_output.append(np.split(output, offsets))
        return [list(parts) for parts in zip(*per_output, strict=True)]
