"""The adaptive batcher: right rows to the right caller, no wait when alone, failures reach everyone."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlcloud import tracing
from mlcloud.errors import InferenceRuntimeError
from mlcloud.inference.batching import AdaptiveBatcher


@pytest.fixture
def pool():
    with ThreadPoolExecutor(4) as executor:
        yield executor


class Model:
    """Two outputs (x * 2 and x + 1) so per-output splitting is exercised; records batch sizes."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.sizes = delay, fail, []
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.sizes.append(len(x))
        time.sleep(self.delay)
        if self.fail:
            raise ValueError("engine exploded")
        return [x * 2, x + 1]


async def test_results_go_back_to_the_right_caller(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.01)
    batcher = AdaptiveBatcher(model, executor=pool, max_batch_size=8, max_wait=0.005)
    inputs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(24)]
    results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, (doubled, plus_one) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(plus_one, x + 1)
    assert max(model.sizes) > 1 and max(model.sizes) <= 8  # it did batch, within the limit
    assert sum(model.sizes) == sum(len(x) for x in inputs)
    await batcher.aclose()


async def test_a_lone_request_never_waits(pool: ThreadPoolExecutor) -> None:
    batcher = AdaptiveBatcher(Model(), executor=pool, max_batch_size=8, max_wait=5.0)
    started = time.perf_counter()
    for _ in range(3):
        await batcher.submit(np.zeros((1, 4), np.float32))
    assert time.perf_counter() - started < 1.0  # max_wait (5 s) was never paid
    await batcher.aclose()


async def test_different_trailing_shapes_are_not_stacked(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.005)
    batcher = AdaptiveBatcher(model, executor=pool, max_batch_size=8, max_wait=0.002)
    a, b = np.ones((1, 4), np.float32), np.ones((1, 5), np.float32)
    results = await asyncio.gather(*(batcher.submit(x) for x in [a, b, a, b, a]))
    assert [r[0].shape for r in results] == [(1, 4), (1, 5), (1, 4), (1, 5), (1, 4)]
    await batcher.aclose()


async def test_a_failed_run_fails_exactly_its_callers(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.005, fail=True)
    batcher = AdaptiveBatcher(model, executor=pool, max_batch_size=4, max_wait=0.002)
    results = await asyncio.gather(
        *(batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(6)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    model.fail = False
    (ok, _) = await batcher.submit(np.ones((1, 2), np.float32))  # the batcher lives on
    np.testing.assert_array_equal(ok, [[2, 2]])
    await batcher.aclose()


async def test_output_without_batch_dimension_fails_the_batch(pool: ThreadPoolExecutor) -> None:
    slow = threading.Event()

    def run(x: np.ndarray) -> list[np.ndarray]:
        slow.wait(0.02)
        return [x.sum(keepdims=True).reshape(1)]

    batcher = AdaptiveBatcher(run, executor=pool, max_batch_size=8, max_wait=0.01)
    results = await asyncio.gather(
        *(batcher.submit(np.ones((1, 2), np.float32)) for _ in range(4)), return_exceptions=True
    )
    assert any(isinstance(r, InferenceRuntimeError) for r in results)
    await batcher.aclose()


async def test_when_the_batcher_dies_every_waiter_fails_and_nobody_hangs(pool: ThreadPoolExecutor) -> None:
    release = threading.Event()

    def run(x: np.ndarray) -> list[np.ndarray]:
        release.wait(5)
        return [x]

    batcher = AdaptiveBatcher(run, executor=pool, max_batch_size=2, max_wait=0.0)
    waiters = [asyncio.ensure_future(batcher.submit(np.zeros((1, 1), np.float32))) for _ in range(5)]
    await asyncio.sleep(0.05)  # one batch running, the rest queued
    await batcher.aclose()  # the worker dies (cancelled) mid-batch
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 2)
    release.set()
    assert all(isinstance(r, InferenceRuntimeError) for r in results)
    assert not batcher.alive
    with pytest.raises(InferenceRuntimeError, match="stopped"):
        await batcher.submit(np.zeros((1, 1), np.float32))


async def test_a_worker_bug_also_fails_every_waiter(pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = AdaptiveBatcher(Model(), executor=pool, max_batch_size=4, max_wait=0.0)

    def broken(batch, rows):  # type: ignore[no-untyped-def]
        raise KeyError("bug in batch forming")

    monkeypatch.setattr(batcher, "_take", broken)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(np.zeros((1, 1), np.float32)) for _ in range(3)), return_exceptions=True),
        2,
    )
    assert all(isinstance(r, InferenceRuntimeError) for r in results)
    assert not batcher.alive


async def test_a_batch_is_logged_with_the_request_ids_it_carried(pool: ThreadPoolExecutor, caplog) -> None:
    model = Model(delay=0.05)

    async def submit(request_id: str) -> None:
        with tracing.serving("MlInference.Predict", request_id):
            await batcher.submit(np.zeros((1, 4), np.float32))

    with tracing.serving("MlInference.Predict", "creator"):  # the batcher outlives its creator's request
        batcher = AdaptiveBatcher(model, executor=pool, max_batch_size=8, max_wait=0.02, name="m")
    first = asyncio.ensure_future(submit("first"))
    await asyncio.sleep(0.01)  # "first" runs alone; the others queue behind it and form a batch
    tracing.add_request_ids(caplog.handler)
    with caplog.at_level(logging.INFO, logger="mlcloud.inference.batching"):
        await asyncio.gather(first, *(submit(f"req-{i}") for i in range(3)))
    [record] = caplog.records
    assert record.getMessage() == "m: a batch of 3 requests: req-0 req-1 req-2"
    assert record.request_id == tracing.NO_REQUEST  # the batcher's own context, not its creator's
    assert model.sizes == [1, 3]
    await batcher.aclose()
