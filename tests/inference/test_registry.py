"""The model registry: states and errors, shared loads, every value type, live swaps under load."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcloud.bindle.errors import BindleUnavailable
from mlcloud.digests import sha256_file
from mlcloud.errors import ContextNotFound, CorruptInputTensor, InvalidModel, ModelLoading
from mlcloud.inference import BatchingConfig, InferenceConfig, ModelRegistry
from mlcloud.interfaces import ModelSource, ModelState, Tensor, TensorInfo, ValueType

from .models import metadata, onnx_model, plus3_graphdef


class Repo:
    """Stands in for the Bindle-backed fetch: bindle id → (model file, metadata JSON bytes)."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[Path, dict[str, Any]]] = {}
        self.calls: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}
        self.down: set[str] = set()

    def add(self, bindle_id: str, path: Path, meta: dict[str, Any]) -> None:
        self.models[bindle_id] = (path, meta)

    def gate(self, bindle_id: str) -> asyncio.Event:
        self.gates[bindle_id] = asyncio.Event()
        return self.gates[bindle_id]

    async def __call__(self, bindle_id: str) -> tuple[Path, bytes]:
        self.calls[bindle_id] += 1
        if bindle_id in self.gates:
            await self.gates[bindle_id].wait()
        if bindle_id in self.down:
            raise BindleUnavailable("bindle server is not answering")
        path, meta = self.models[bindle_id]
        return path, json.dumps(meta).encode()


CONFIG = InferenceConfig(fetch_attempts=2, fetch_backoff=0.01, intra_op_threads=1)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo()
    repo.add("identity_model/0.2.0", onnx_model(tmp_path / "identity.onnx"), metadata(dims=[-1, 4]))
    repo.add("add1/0.1.0", onnx_model(tmp_path / "add1.onnx", op="Add", constant=1.0), metadata("add1", dims=[-1, 4]))
    repo.add("add2/0.1.0", onnx_model(tmp_path / "add2.onnx", op="Add", constant=2.0), metadata("add2", dims=[-1, 4]))
    repo.add("plus3/0.1.0", plus3_graphdef(tmp_path / "plus3.pb"), metadata("plus3", "tensorflow"))
    repo.add("conv/0.1.0", plus3_graphdef(tmp_path / "conv.pb", extra_op="Conv2D"), metadata("conv", "tensorflow"))
    return repo


def f32(*rows: list[float]) -> Tensor:
    return Tensor.from_numpy(np.array(rows, np.float32))


async def test_loading_then_ready_then_predict(repo: Repo) -> None:
    gate = repo.gate("identity_model/0.2.0")
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"identity": "identity_model/0.2.0"})
        assert registry.state("identity") is ModelState.LOADING and not registry.ready
        with pytest.raises(ModelLoading, match="still loading") as loading:
            await registry.predict("identity", f32([1, 2, 3, 4]))
        assert loading.value.details["retry_after"] >= 1
        gate.set()
        await registry.wait_ready(timeout=10)
        assert registry.state("identity") is ModelState.READY and registry.ready
        answer = await registry.predict("identity", f32([1, 2, 3, 4]))
        assert answer.to_numpy().tolist() == [[1, 2, 3, 4]]
        assert answer.value_types == [ValueType.ValueF32]


async def test_unknown_route_is_context_not_found(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        with pytest.raises(ContextNotFound):
            await registry.predict("nope", f32([1, 2, 3, 4]))
        with pytest.raises(ContextNotFound):
            registry.status("nope")


async def test_failed_load_says_why_and_reapplying_retries(repo: Repo) -> None:
    repo.down.add("identity_model/0.2.0")
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"conv": "conv/0.1.0", "identity": "identity_model/0.2.0"})
        await registry.wait_ready(timeout=10)
        assert registry.state("conv") is ModelState.FAILED
        with pytest.raises(InvalidModel, match="TensorflowError.*'Conv2D'"):
            await registry.predict("conv", f32([1, 2, 3, 4]))
        assert repo.calls["identity_model/0.2.0"] == 2  # fetch retried before giving up
        with pytest.raises(InvalidModel, match="BindleUnavailable"):
            await registry.predict("identity", f32([1, 2, 3, 4]))
        [info] = registry.status("identity")
        assert info.state == "FAILED" and "not answering" in info.reason

        repo.down.clear()
        await registry.apply({"conv": "conv/0.1.0", "identity": "identity_model/0.2.0"})
        await registry.wait_ready(timeout=10)
        assert registry.state("identity") is ModelState.READY


async def test_bad_metadata_fails_the_load(repo: Repo, tmp_path: Path) -> None:
    repo.add("broken/1.0.0", tmp_path / "identity.onnx", {"model_name": "x", "graph_encoding": "caffe"})
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"broken": "broken/1.0.0"})
        await registry.wait_ready(timeout=10)
        with pytest.raises(InvalidModel, match="graph_encoding"):
            await registry.predict("broken", f32([1, 2, 3, 4]))


@pytest.mark.parametrize("value_type", list(ValueType))
async def test_every_value_type_is_carried_as_itself(tmp_path: Path, value_type: ValueType) -> None:
    repo = Repo()
    path = onnx_model(tmp_path / "id.onnx", dtype=value_type.dtype, shape=["N", 3])
    repo.add("id/1.0.0", path, metadata(dims=[-1, 3], tensor_type=value_type.value.removeprefix("Value")))
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"id": "id/1.0.0"})
        await registry.wait_ready(timeout=10)
        request = Tensor.from_numpy((np.arange(6).reshape(2, 3) % 2).astype(value_type.dtype))
        answer = await registry.predict("id", request)
        assert answer.value_types == [value_type] and answer.data == request.data
        other = next(v for v in ValueType if v.dtype.itemsize != value_type.dtype.itemsize)
        wrong = Tensor(dimensions=[1, 3], value_types=[other], data=bytes(3 * other.dtype.itemsize))
        with pytest.raises(CorruptInputTensor, match="value type"):
            await registry.predict("id", wrong)


async def test_input_checked_against_the_model(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"identity": "identity_model/0.2.0"})
        await registry.wait_ready(timeout=10)
        with pytest.raises(CorruptInputTensor, match="dimensions"):
            await registry.predict("identity", f32([1, 2, 3]))
        short = Tensor(dimensions=[1, 4], value_types=[ValueType.ValueF32], data=b"\0" * 15)
        with pytest.raises(CorruptInputTensor, match="needs 16 bytes"):
            await registry.predict("identity", short)
        with pytest.raises(CorruptInputTensor, match="index 3"):
            await registry.predict("identity", f32([1, 2, 3, 4]), index=3)


async def test_a_model_is_loaded_once_for_every_route_that_names_it(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"a": "identity_model/0.2.0", "b": "identity_model/0.2.0"})
        await registry.wait_ready(timeout=10)
        assert repo.calls["identity_model/0.2.0"] == 1
        assert registry._routes["a"].active is registry._routes["b"].active
        # A third route naming it later shares the loaded model at once.
        await registry.apply({"a": "identity_model/0.2.0", "b": "identity_model/0.2.0", "c": "identity_model/0.2.0"})
        assert registry.state("c") is ModelState.READY and repo.calls["identity_model/0.2.0"] == 1


async def test_tf1_plus3_on_tract_by_link_override(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"plus3": "plus3/0.1.0"}, engines={"plus3": "tract"})
        await registry.wait_ready(timeout=10)
        answer = await registry.predict("plus3", f32([1, 2, 3, 4]))
        assert answer.to_numpy().tolist() == [[4, 5, 6, 7]]
        [info] = registry.status("plus3")
        assert info.engine == "tract" and info.inputs == [TensorInfo(name="input", shape=[1, 4], datatype="ValueF32")]


@pytest.mark.parametrize("batching", [False, True])
async def test_live_swap_under_concurrent_load_fails_nothing(repo: Repo, batching: bool) -> None:
    config = CONFIG.replace(batching=BatchingConfig(enabled=batching, max_batch_size=4, max_wait=0.001))
    events: list[tuple[str, str]] = []
    async with ModelRegistry(repo, config, on_event=lambda e, info: events.append((e, info.bindle_id))) as registry:
        await registry.apply({"m": "add1/0.1.0"})
        await registry.wait_ready(timeout=10)
        old = registry._routes["m"].active
        gate = repo.gate("add2/0.1.0")
        seen: Counter[float] = Counter()
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def client(k: int) -> None:
            x = np.full((1, 4), k, np.float32)
            while not stop.is_set():
                try:
                    y = (await registry.predict("m", Tensor.from_numpy(x))).to_numpy()
                    seen[float(y[0, 0] - k)] += 1
                except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                    failures.append(exc)
                await asyncio.sleep(0)

        clients = [asyncio.create_task(client(k)) for k in range(12)]
        await asyncio.sleep(0.05)
        await registry.apply({"m": "add2/0.1.0"})  # loads while add1 keeps serving
        await asyncio.sleep(0.05)
        assert registry.state("m") is ModelState.READY and "swapping to add2" in registry.status("m")[0].reason
        gate.set()
        await registry.wait_ready(timeout=10)
        before = seen[2.0]
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
        assert failures == []
        assert set(seen) == {1.0, 2.0} and seen[2.0] > before
        assert registry.routes == {"m": "add2/0.1.0"}
        assert old.retired and old.session is None  # dropped once its requests finished
        assert ("model_swapped", "add2/0.1.0") in events and ("model_unloaded", "add1/0.1.0") in events
        if batching:
            assert registry._routes["m"].active.batcher is not None


async def test_each_answer_names_the_model_file_that_made_it_across_a_swap(repo: Repo) -> None:
    def source(bindle_id: str) -> ModelSource:
        return ModelSource(bindle_id=bindle_id, sha256=sha256_file(repo.models[bindle_id][0]))

    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"m": "add1/0.1.0"})
        await registry.wait_ready(timeout=10)
        answer, answered_by = await registry.serve("m", f32([0, 0, 0, 0]))
        assert answer.to_numpy().tolist() == [[1, 1, 1, 1]] and answered_by == source("add1/0.1.0")
        assert registry.status("m")[0].sha256 == source("add1/0.1.0").sha256
        gate = repo.gate("add2/0.1.0")
        await registry.apply({"m": "add2/0.1.0"})
        assert (await registry.serve("m", f32([0, 0, 0, 0])))[1] == source("add1/0.1.0")  # still the old one
        gate.set()
        await registry.wait_ready(timeout=10)
        answer, answered_by = await registry.serve("m", f32([0, 0, 0, 0]))
        assert answer.to_numpy().tolist() == [[2, 2, 2, 2]] and answered_by == source("add2/0.1.0")


async def test_a_failed_swap_keeps_the_old_model_serving(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"m": "add1/0.1.0"})
        await registry.wait_ready(timeout=10)
        await registry.apply({"m": "conv/0.1.0"})
        await registry.wait_ready(timeout=10)
        assert (await registry.predict("m", f32([0, 0, 0, 0]))).to_numpy().tolist() == [[1, 1, 1, 1]]
        [info] = registry.status("m")
        assert info.bindle_id == "add1/0.1.0" and "swap to conv/0.1.0 failed" in info.reason


async def test_unlinked_route_is_gone_but_in_flight_requests_finish(repo: Repo) -> None:
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"m": "add1/0.1.0", "keep": "identity_model/0.2.0"})
        await registry.wait_ready(timeout=10)
        in_flight = asyncio.ensure_future(registry.predict("m", f32([1, 1, 1, 1])))
        await asyncio.sleep(0)  # the request has taken the model
        await registry.apply({"keep": "identity_model/0.2.0"})
        assert (await in_flight).to_numpy().tolist() == [[2, 2, 2, 2]]
        with pytest.raises(ContextNotFound):
            await registry.predict("m", f32([1, 1, 1, 1]))
        assert registry.routes == {"keep": "identity_model/0.2.0"}


async def test_relinking_a_loading_route_replaces_the_load(repo: Repo) -> None:
    repo.gate("add1/0.1.0")
    async with ModelRegistry(repo, CONFIG) as registry:
        await registry.apply({"m": "add1/0.1.0"})
        await registry.apply({"m": "add2/0.1.0"})  # add1 never became ready: no point waiting
        await registry.wait_ready(timeout=10)
        assert (await registry.predict("m", f32([0, 0, 0, 0]))).to_numpy().tolist() == [[2, 2, 2, 2]]
        assert list(registry._models) == [registry._routes["m"].active.key]


async def test_batching_stacks_concurrent_requests_and_skips_fixed_batch_models(repo: Repo) -> None:
    config = CONFIG.replace(batching=BatchingConfig(enabled=True, max_batch_size=8, max_wait=0.002))
    async with ModelRegistry(repo, config) as registry:
        await registry.apply({"m": "add1/0.1.0", "plus3": "plus3/0.1.0"})
        await registry.wait_ready(timeout=10)
        batcher = registry._routes["m"].active.batcher
        assert batcher is not None
        assert registry._routes["plus3"].active.batcher is None  # input fixed at [1, 4]
        xs = [np.full((1, 4), k, np.float32) for k in range(32)]
        answers = await asyncio.gather(*(registry.predict("m", Tensor.from_numpy(x)) for x in xs))
        for x, answer in zip(xs, answers, strict=True):
            np.testing.assert_array_equal(answer.to_numpy(), x + 1)
        assert batcher.batches < len(xs)
        await registry.set_batching(BatchingConfig(enabled=False))
        assert registry._routes["m"].active.batcher is None
        assert (await registry.predict("m", f32([0, 0, 0, 0]))).to_numpy().tolist() == [[1, 1, 1, 1]]
