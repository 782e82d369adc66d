"""Experiments between versions against the real stack: a fixed split keeps its weights, a split
key keeps its arm, Thompson sampling finds the better version from rewards, and the posteriors
outlive the api actor's process (mlcloud.experiments, actors/api/splitting.py)."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal

import httpx
import numpy as np
import pytest

import mlcloud
from mlcloud.testing.stack import MODELS_DIR

pytestmark = pytest.mark.asyncio(loop_scope="module")

IDENTITY = MODELS_DIR / "build" / "identity_model-0.2.0" / "identity_model.onnx"
TENSOR = {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "flags": 0,
          "data": list(np.array([1, 2, 3, 4], dtype="<f4").tobytes())}


async def deploy_two_versions(stack, name: str) -> None:
    for version in ("1.0.0", "2.0.0"):
        await asyncio.to_thread(mlcloud.deploy, IDENTITY, name, version, settings=stack.settings,
                                progress=lambda _: None)


async def split(stack, http: httpx.AsyncClient, name: str, *args, **kwargs):
    chosen = await asyncio.to_thread(mlcloud.split, name, *args, settings=stack.settings, progress=lambda _: None,
                                     **kwargs)
    await applied(http, name, split=chosen is not None)
    return chosen


async def applied(http: httpx.AsyncClient, name: str, *, split: bool) -> None:
    """Until the api actor has the link change: its link watch follows the link bucket a few
    milliseconds after ``split`` returns (docs/experiments.md)."""
    async with asyncio.timeout(10):
        while True:
            reply = await http.post(f"/{name}", json=TENSOR)
            if reply.status_code == 200 and ("x-split-arm" in reply.headers) == split:
                return
            await asyncio.sleep(0.01)


async def infer(http: httpx.AsyncClient, name: str, key: str | None = None) -> httpx.Response:
    reply = await http.post(f"/{name}", json=TENSOR, headers={"x-split-key": key} if key else {})
    assert reply.status_code == 200, reply.text
    assert reply.json()["tensor"]["data"] == TENSOR["data"]
    return reply


async def experiment(http: httpx.AsyncClient, name: str) -> dict:
    reply = await http.get("/experiments")
    reply.raise_for_status()
    return next(e for e in reply.json() if e["route"] == name)


async def test_a_fixed_split_serves_by_its_weights_and_a_split_key_keeps_its_arm(stack, http):
    await deploy_two_versions(stack, "fixed")
    chosen = await split(stack, http, "fixed", {"1.0.0": 0.8, "2.0.0": 0.2})
    assert chosen.weights == {"1.0.0": 0.8, "2.0.0": 0.2}
    arms: collections.Counter[str] = collections.Counter()
    for _ in range(400):
        reply = await infer(http, "fixed")
        arm = reply.headers["x-split-arm"]
        assert reply.headers["x-model"] == f"fixed/{arm}"
        arms[arm] += 1
    # Binomial(400, 0.2): mean 80, standard deviation 8; five of them either way.
    assert 40 <= arms["2.0.0"] <= 120 and arms["1.0.0"] + arms["2.0.0"] == 400

    for key in ("alice", "bob", "carol"):
        assert len({(await infer(http, "fixed", key)).headers["x-split-arm"] for _ in range(15)}) == 1
    keyed = {(await infer(http, "fixed", f"user-{i}")).headers["x-split-arm"] for i in range(40)}
    assert keyed == {"1.0.0", "2.0.0"}  # keys spread over the arms (all 40 on one: p < 1e-3)

    shown = await experiment(http, "fixed")
    assert shown["policy"] == "fixed"
    assert {a["version"]: a["weight"] for a in shown["arms"]} == {"1.0.0": 0.8, "2.0.0": 0.2}
    assert all(a["rewards"] == 0 and a["mean"] == 0.5 for a in shown["arms"])

    await split(stack, http, "fixed", None)
    reply = await infer(http, "fixed")
    assert "x-split-arm" not in reply.headers and reply.headers["x-model"] == "fixed/2.0.0"
    assert (await http.post("/fixed/feedback", json={"request_id": "r", "reward": 1})).status_code == 404


async def test_thompson_sampling_sends_the_traffic_to_the_better_version_and_its_posteriors_outlive_the_api(
        stack, http):
    await deploy_two_versions(stack, "ts")
    chosen = await split(stack, http, "ts", policy="thompson")  # the bindle's versions: 1.0.0 and 2.0.0
    assert list(chosen.weights) == ["1.0.0", "2.0.0"]
    rates = {"1.0.0": 0.2, "2.0.0": 0.8}
    rewards = random.Random(17)
    served: list[str] = []

    async def client(count: int) -> None:
        for _ in range(count):
            reply = await infer(http, "ts")
            arm = reply.headers["x-split-arm"]
            served.append(arm)
            reward = 1.0 if rewards.random() < rates[arm] else 0.0
            feedback = await http.post("/ts/feedback", json={"request_id": reply.headers["x-request-id"],
                                                             "reward": reward})
            assert feedback.status_code == 200, feedback.text
            assert feedback.json()["version"] == arm

    await asyncio.gather(*(client(250) for _ in range(4)))  # concurrent feedback: compare-and-set
    better = served[-200:].count("2.0.0") / 200
    assert better >= 0.9, f"{better:.0%} of the last 200 went to the better version"
    shown = await experiment(http, "ts")
    arms = {a["version"]: a for a in shown["arms"]}
    assert sum(a["rewards"] for a in arms.values()) == 1000  # no reward lost to a concurrent one
    assert arms["2.0.0"]["low"] < 0.8 < arms["2.0.0"]["high"]
    assert arms["1.0.0"]["high"] < arms["2.0.0"]["low"]

    # Feedback is taken once, for a request of that route, with a reward in 0..1.
    reply = await infer(http, "ts")
    request_id = reply.headers["x-request-id"]
    assert (await http.post("/ts/feedback", json={"request_id": request_id, "reward": 1.5})).status_code == 400
    assert (await http.post("/ts/feedback", json={"request_id": request_id})).status_code == 400
    assert (await http.post("/ts/feedback", content=b"nope")).status_code == 400
    assert (await http.post("/nosuch/feedback", json={"request_id": request_id, "reward": 1})).status_code == 404
    assert (await http.post("/ts/feedback", json={"request_id": request_id, "reward": 1})).status_code == 200
    again = await http.post("/ts/feedback", json={"request_id": request_id, "reward": 1})
    assert again.status_code == 404 and "rewarded already" in again.json()["error"]["message"]
    unknown = await http.post("/ts/feedback", json={"request_id": "never-served", "reward": 0})
    assert unknown.status_code == 404

    inventory = await stack.ctl.get_inventory(stack.host.id)
    api = next(a for a in inventory.actors if a.name == "api").instances[0]
    assert api.pid is not None
    os.kill(api.pid, signal.SIGKILL)
    async with asyncio.timeout(30):
        while True:
            try:
                after = await experiment(http, "ts")
                break
            except (httpx.HTTPError, StopIteration):
                await asyncio.sleep(0.1)
    assert {a["version"]: a["rewards"] for a in after["arms"]} == {v: a["rewards"] for v, a in arms.items()} | {
        reply.headers["x-split-arm"]: arms[reply.headers["x-split-arm"]]["rewards"] + 1}
    assert (await infer(http, "ts")).headers["x-split-arm"] in rates


async def test_the_cli_splits_shows_and_unsplits_and_undeploy_takes_the_arms_too(stack, http):
    import json
    import subprocess
    import sys

    await deploy_two_versions(stack, "cli-ab")
    env = {**os.environ, **stack.settings.to_env()}

    def mlcloud_cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "mlcloud.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == code, done.stderr
        return done.stdout + done.stderr

    said = await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "1.0.0=3", "2.0.0=1")
    assert "cli-ab is split by fixed: 1.0.0 75%, 2.0.0 25%" in said
    await applied(http, "cli-ab", split=True)
    [shown] = json.loads(await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "--show", "--json"))
    assert {a["version"]: a["weight"] for a in shown["arms"]} == {"1.0.0": 0.75, "2.0.0": 0.25}
    table = await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "--show")
    assert "ROUTE" in table and "[0.025, 0.975]" in table
    assert "expected VERSION=WEIGHT" in await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "2.0.0=x", code=2)
    assert "two versions" in await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "2.0.0=1", code=1)
    said = await asyncio.to_thread(mlcloud_cli, "split", "cli-ab", "--policy", "thompson")
    assert "cli-ab is split by thompson: 1.0.0, 2.0.0" in said  # the split's own versions

    assert "cli-ab serves cli-ab/2.0.0 alone" in await asyncio.to_thread(mlcloud_cli, "unsplit", "cli-ab")
    await applied(http, "cli-ab", split=False)
    await split(stack, http, "cli-ab", ["1.0.0", "2.0.0"])
    await asyncio.to_thread(mlcloud.undeploy, "cli-ab", settings=stack.settings)
    values = {k for link in await stack.ctl.get_links() for k in link.values}
    assert not {k for k in values if "cli-ab" in k}
