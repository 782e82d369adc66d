"""``GET /metrics`` against the real stack: the figures every process keeps, gathered over the
lattice (mlcloud/lattice/scrape.py), match the requests sent (docs/metrics.md).

One stack per module. Each test reads the figures before and after what it sends, so the order
of the tests does not matter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
from collections.abc import Callable

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from mlcloud.testing.stack import PROJECT_DIR, running_stack

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CAT = (PROJECT_DIR / "images" / "cat.jpg").read_bytes()
Samples = list[tuple[str, dict[str, str], float]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("stack")) as running:
        running.ready_at = time.monotonic()
        yield running


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the ``name`` samples with these labels (over instances, and any label not named)."""
    return sum(value for n, found, value in samples
               if n == name and all(found.get(k) == want for k, want in labels.items()))


def f32_tensor(values: list[float]) -> dict:
    return {"dimensions": [1, len(values)], "valueTypes": ["ValueF32"], "flags": 0,
            "data": list(struct.pack(f"<{len(values)}f", *values))}


async def test_the_figures_count_the_requests_sent_and_time_every_stage(http, stack):
    before = await scrape(http)
    for _ in range(4):
        assert (await http.put("/mobilenetv27/matches", content=CAT)).status_code == 200
    for _ in range(2):  # a body that is no image: the preprocess stage refuses it
        response = await http.put("/mobilenetv27/matches", content=b"not an image",
                                  headers={"content-type": "image/jpeg"})
        assert response.status_code == 415, response.text
    assert (await http.put("/nosuchmodel/matches", content=CAT)).status_code == 404
    for _ in range(3):
        assert (await http.post("/plus3", json=f32_tensor([1, 2, 3, 4]))).status_code == 200
    after = await scrape(http)

    def sent(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    matches = {"route": "/{model}/matches", "model": "mobilenetv27", "version": "1.0.0"}
    assert sent("mlcloud_http_requests_total", **matches, status="200") == 4
    assert sent("mlcloud_http_requests_total", **matches, status="415") == 2
    # A model name nobody links is no label of its own.
    assert sent("mlcloud_http_requests_total", route="/{model}/matches", model="", status="404") == 1
    assert sent("mlcloud_http_requests_total", route="/{model}", model="plus3", version="0.1.0", status="200") == 3
    assert sent("mlcloud_http_request_duration_seconds_count", **matches) == 6
    assert sent("mlcloud_http_request_duration_seconds_bucket", **matches, le="+Inf") == 6
    assert sent("mlcloud_http_request_duration_seconds_sum", **matches) > 0

    # Predict: only the requests that reached it; one model execution each (one request at a time).
    assert sent("mlcloud_inference_requests_total", model="mobilenetv27", version="1.0.0", result="Success") == 4
    assert sent("mlcloud_inference_requests_total", model="plus3", result="Success") == 3
    assert sent("mlcloud_inference_request_duration_seconds_count", model="mobilenetv27") == 4
    assert sent("mlcloud_inference_batch_size_count", model="mobilenetv27") == 4
    assert sent("mlcloud_inference_batch_size_sum", model="mobilenetv27") == 4

    # The stages: a refused image was still preprocessed; the others reached every stage.
    stage = "mlcloud_stage_duration_seconds_count"
    assert sent(stage, stage="preprocess", model="mobilenetv27") == 6
    for name in ("queue", "inference", "postprocess"):
        assert sent(stage, stage=name, model="mobilenetv27") == 4, name
    assert sent(stage, stage="inference", model="plus3") == 3
    assert sent(stage, stage="postprocess", model="plus3") == 0
    spent = sum(sent("mlcloud_stage_duration_seconds_sum", stage=name, model="mobilenetv27")
                for name in ("preprocess", "queue", "inference", "postprocess"))
    assert 0 < spent < sent("mlcloud_http_request_duration_seconds_sum", **matches)  # the rest is the lattice's


async def test_the_washboard_reads_the_same_figures(http, stack):
    assert (await http.put("/mobilenetv27/matches", content=CAT)).status_code == 200
    samples = await scrape(http)
    infos = {m.name: m for link in await stack.ctl.get_models(stack.host.id) for m in link.models}
    for route in ("mobilenetv27", "plus3"):
        requests = total(samples, "mlcloud_inference_requests_total", model=route)
        if time.monotonic() - stack.ready_at < 50:  # the washboard's minute holds every request yet
            assert infos[route].requests == requests, route
        else:
            assert 0 < infos[route].requests <= requests, route
    assert infos["mobilenetv27"].p50_ms > 0 and infos["mobilenetv27"].load_seconds > 0


async def test_every_process_reports_labelled_with_its_host_and_instance(http, stack):
    started = time.monotonic()
    samples = await scrape(http)
    # Every healthy instance answered, so the scrape did not wait for its deadline.
    assert time.monotonic() - started < stack.settings.ctl_timeout
    assert {labels["host"] for _, labels, _ in samples} == {stack.host.id}
    inventory = await stack.ctl.get_inventory(stack.host.id)
    instances = {i.instance_id: c.name for c in [*inventory.actors, *inventory.providers] for i in c.instances}
    reporting = {labels["instance_id"]: labels["component"] for name, labels, _ in samples
                 if name == "process_resident_memory_bytes" and "instance_id" in labels}
    assert reporting == instances
    for instance_id in instances:
        assert total(samples, "mlcloud_instance_healthy", instance_id=instance_id) == 1
    ready = {"model": "mobilenetv27", "version": "1.0.0"}
    assert total(samples, "mlcloud_model_state", **ready, state="READY") == 1
    assert total(samples, "mlcloud_model_state", **ready, state="LOADING") == 0
    assert total(samples, "mlcloud_model_load_duration_seconds", **ready, engine="onnxruntime") > 0


async def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[misc]
            await asyncio.sleep(0.1)


async def test_a_restarted_instance_shows_in_restarts_and_starts_its_counters_again(http, stack):
    inventory = await stack.ctl.get_inventory(stack.host.id)
    postprocess = next(a for a in inventory.actors if a.name == "postprocess").instances[0]
    assert (await http.put("/mobilenetv27/matches", content=CAT)).status_code == 200
    labels = {"instance_id": postprocess.instance_id}
    restarts = total(await scrape(http), "mlcloud_instance_restarts_total", **labels)
    assert postprocess.pid is not None
    os.kill(postprocess.pid, signal.SIGKILL)

    async def back() -> bool:
        samples = await scrape(http)
        return (total(samples, "mlcloud_instance_restarts_total", **labels) == restarts + 1
                and total(samples, "mlcloud_instance_healthy", **labels) == 1)

    await wait_for(back)
    samples = await scrape(http)
    stage = {"stage": "postprocess", "model": "mobilenetv27", **labels}
    assert total(samples, "mlcloud_stage_duration_seconds_count", **stage) == 0  # a new process counts from 0
    assert (await http.put("/mobilenetv27/matches", content=CAT)).status_code == 200
    assert total(await scrape(http), "mlcloud_stage_duration_seconds_count", **stage) == 1
