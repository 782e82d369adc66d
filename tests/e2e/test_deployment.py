"""``mlcloud.deploy`` / ``models`` / ``undeploy`` against the real stack, as a notebook uses them.

The sync functions run in a worker thread here (``asyncio.to_thread``), as in a plain script: the
stack's host shares the test's event loop, which a blocking call on it would stall.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlcloud
from mlcloud.deployment import run_blocking, write_bundle
from mlcloud.modelbuild import convert
from mlcloud.modelbuild.errors import ConversionError, MissingExtra
from mlcloud.testing.stack import MODELS_DIR

X, Y = load_iris(return_X_y=True)


async def infer(client: httpx.AsyncClient, name: str, rows: np.ndarray) -> tuple[dict[str, list], str]:
    body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.astype(np.float32).ravel().tolist()}]}
    reply = await client.post(f"/v2/models/{name}/infer", json=body)
    reply.raise_for_status()
    return {o["name"]: o["data"] for o in reply.json()["outputs"]}, reply.headers["x-model"]


async def served_by(client: httpx.AsyncClient, name: str) -> str:
    """The bindle serving ``name`` now: ``GET /models`` asks the provider afresh (the api's catalog
    is cached for a second)."""
    reply = await client.get(f"/models/{name}")
    reply.raise_for_status()
    bindle_id: str = reply.json()["bindle_id"]
    return bindle_id


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_an_iris_pipeline_deployed_from_python_answers_as_the_estimator_and_updates_without_a_failure(stack):
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    first = await stack.deploy(pipeline, "iris", sample=X[:5])
    assert (first.bindle_id, first.url) == ("iris/1.0.0", f"{stack.http_url}/iris")
    assert first.curl.startswith(f"curl -s {stack.http_url}/iris/predict ") and "[[5.1, 3.5, 1.4, 0.2]]" in first.curl
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        outputs, served = await infer(client, "iris", X)
        assert served == "iris/1.0.0"
        assert outputs["label"] == pipeline.predict(X).tolist()
        np.testing.assert_allclose(np.reshape(outputs["probabilities"], (-1, 3)), pipeline.predict_proba(X),
                                   rtol=1e-3, atol=1e-4)

        forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, Y)
        failures: list[str] = []
        answered = 0
        swapping = True

        async def load() -> None:
            nonlocal answered
            while swapping:
                try:
                    await infer(client, "iris", X[:3])
                    answered += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

        clients = [asyncio.create_task(load()) for _ in range(4)]
        second = await stack.deploy(forest, "iris", version="2.0.0", sample=X[:5])
        swapping = False
        await asyncio.gather(*clients)
        assert failures == [] and answered > 0
        assert second.bindle_id == await served_by(client, "iris") == "iris/2.0.0"
        outputs, served = await infer(client, "iris", X)
        assert served == "iris/2.0.0"
        assert outputs["label"] == forest.predict(X).tolist()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_an_onnx_file_deploys_with_the_next_patch_version_lists_and_undeploys_to_a_404(stack):
    model = MODELS_DIR / "build" / "identity_model-0.2.0" / "identity_model.onnx"
    first = await stack.deploy(model, "echo")
    assert first.bindle_id == "echo/1.0.0"
    second = await stack.deploy(str(model), "echo")
    assert second.bindle_id == "echo/1.0.1"
    tensor = {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "flags": 0,
              "data": list(np.array([1, 2, 3, 4], dtype="<f4").tobytes())}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        assert await served_by(client, "echo") == "echo/1.0.1"
        reply = await client.post("/echo", json=tensor)
        assert reply.status_code == 200 and reply.headers["x-model"] == "echo/1.0.1"
        assert reply.json()["tensor"]["data"] == tensor["data"]

        listed = {m.name: m for m in await asyncio.to_thread(mlcloud.models, settings=stack.settings)}
        assert listed["echo"].bindle_id == "echo/1.0.1" and listed["echo"].state == "READY"
        assert listed["echo"].url == f"{stack.http_url}/echo"

        await asyncio.to_thread(mlcloud.undeploy, "echo", settings=stack.settings)
        assert (await client.post("/echo", json=tensor)).status_code == 404
        assert "echo" not in {m.name for m in await asyncio.to_thread(mlcloud.models, settings=stack.settings)}


def test_a_missing_converter_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(convert.EXTRAS, "sklearn", ("skl2onnx", "mlcloud-no-such-package"))
    with pytest.raises(MissingExtra, match=r'pip install "mlcloud\[sklearn\]"'):
        convert.to_onnx(LogisticRegression(max_iter=500).fit(X, Y))


def test_a_sample_the_onnx_model_cannot_take_is_refused_before_anything_is_pushed():
    model = MODELS_DIR / "build" / "identity_model-0.2.0" / "identity_model.onnx"
    with pytest.raises(ConversionError, match="does not run on the sample"):
        convert.to_onnx(model, sample=X[:2, :3])


def test_the_bindle_records_schema_classes_and_converters(tmp_path):
    import json
    import tomllib

    converted = convert.to_onnx(LogisticRegression(max_iter=500).fit(X, Y), sample=X[:5])
    directory = write_bundle(converted, "iris", "1.2.3", tmp_path)
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["classes"] == [0, 1, 2] and metadata["framework"] == "sklearn"
    assert metadata["inputs"] == [{"name": "input", "datatype": "F32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]
    assert set(metadata["converters"]) == {"skl2onnx", "scikit-learn", "mlcloud"}
    invoice = tomllib.loads((directory / "invoice.toml").read_text())
    assert {p["label"]["name"] for p in invoice["parcel"]} == {"model.onnx", "metadata.json"}
    assert all(len(p["label"]["sha256"]) == 64 for p in invoice["parcel"])


async def test_the_sync_api_runs_inside_a_running_event_loop_as_in_jupyter():
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_blocking(answer) == 42


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_the_cli_deploys_a_pickled_estimator_lists_it_and_undeploys_it(stack, tmp_path):
    import json
    import subprocess
    import sys

    import joblib

    model = LogisticRegression(max_iter=500).fit(X, Y)
    joblib.dump(model, tmp_path / "iris.joblib")
    env = {**os.environ, **stack.settings.to_env()}

    def mlcloud_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "mlcloud.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    deployed = await asyncio.to_thread(mlcloud_cli, "deploy", str(tmp_path / "iris.joblib"), "--name", "cli-iris")
    assert "cli-iris is READY (cli-iris/1.0.0)" in deployed and "curl -s " in deployed
    curl = deployed.strip().splitlines()[-1]
    answer = json.loads((await asyncio.to_thread(subprocess.run, curl, shell=True, capture_output=True,
                                                 text=True, check=True)).stdout)
    assert answer == {"predictions": model.predict(np.zeros((1, 4))).tolist()}
    listed = json.loads(await asyncio.to_thread(mlcloud_cli, "models", "list", "--json"))
    assert {"name": "cli-iris", "bindle_id": "cli-iris/1.0.0", "state": "READY"}.items() <= next(
        m for m in listed if m["name"] == "cli-iris").items()
    assert "cli-iris undeployed" in await asyncio.to_thread(mlcloud_cli, "undeploy", "cli-iris")
    async with httpx.AsyncClient(base_url=stack.http_url) as client:
        assert (await client.get("/models/cli-iris")).status_code == 404


def test_a_tf1_frozen_graph_becomes_onnx_and_the_bindle_keeps_the_pb_it_came_from(tmp_path):
    import hashlib
    import json

    import onnxruntime

    graph = MODELS_DIR / "build" / "plus3-0.1.0" / "plus3.pb"
    sample = np.array([[1, 2, 3, 4]], dtype=np.float32)
    converted = convert.to_onnx(graph, sample=sample)
    session = onnxruntime.InferenceSession(converted.model.SerializeToString())
    np.testing.assert_array_equal(session.run(None, {session.get_inputs()[0].name: sample})[0], sample + 3)
    directory = write_bundle(converted, "plus3", "1.0.0", tmp_path)
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["source"] == {"name": "plus3.pb", "sha256": hashlib.sha256(graph.read_bytes()).hexdigest()}
    assert (directory / "plus3.pb").read_bytes() == graph.read_bytes()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_tabular_predict_takes_rows_as_lists_or_by_feature_name_and_names_the_bad_field(stack):
    import pandas as pd

    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    model = LogisticRegression(max_iter=500).fit(frame, Y)
    await stack.deploy(model, "iris-rows", sample=frame[:5])
    rows = frame[::10]
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        by_list = await client.post("/iris-rows/predict", json={"instances": rows.values.tolist()})
        by_name = await client.post("/iris-rows/predict", json={"instances": rows.to_dict(orient="records")})
        assert by_list.json() == by_name.json() == {"predictions": model.predict(rows).tolist()}
        proba = await client.post("/iris-rows/predict?proba=1", json={"instances": rows.values.tolist()})
        np.testing.assert_allclose(proba.json()["predictions"], model.predict_proba(rows), rtol=1e-3, atol=1e-4)

        async def refused(instances: list) -> str:
            reply = await client.post("/iris-rows/predict", json={"instances": instances})
            assert reply.status_code == 400, reply.text
            return reply.json()["error"]["message"]

        assert (await refused([[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, 1.4]])).startswith("instances[1]: expected 4 features")
        assert (await refused([[5.1, 3.5, "x", 0.2]])).startswith("instances[0][2]: 'x' is not a number")
        assert (await refused([{**rows.iloc[0].to_dict(), "petal_width": None}])).startswith(
            "instances[0].petal_width: None is not a number")
        assert (await refused([{"sepal_length": 5.1}])).startswith("instances[0].sepal_width: missing")
        assert (await refused([{**rows.iloc[0].to_dict(), "colour": 1}])).startswith(
            "instances[0].colour: no such feature")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_a_model_the_provider_cannot_load_is_unlinked_and_the_route_keeps_serving_the_old_one(stack):
    from onnx import TensorProto, helper

    from mlcloud.errors import InvalidModel

    await stack.deploy(MODELS_DIR / "build" / "identity_model-0.2.0" / "identity_model.onnx", "steady")
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in ("input", "output")]
    unknown_op = helper.make_graph([helper.make_node("Foo", ["input"], ["output"], domain="com.example")], "g",
                                   io[:1], io[1:])
    broken = helper.make_model(unknown_op, opset_imports=[helper.make_opsetid("", 13),
                                                          helper.make_opsetid("com.example", 1)], ir_version=8)
    with pytest.raises(InvalidModel, match="steady/1.0.1"):
        await stack.deploy(broken, "steady")
    listed = {m.name: m for m in await asyncio.to_thread(mlcloud.models, settings=stack.settings)}
    assert (listed["steady"].bindle_id, listed["steady"].state) == ("steady/1.0.0", "READY")
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        assert await served_by(client, "steady") == "steady/1.0.0"
        reply = await client.post("/steady/predict", json={"instances": [[1, 2, 3, 4]]})
        assert reply.json() == {"predictions": [[1, 2, 3, 4]]} and reply.headers["x-model"] == "steady/1.0.0"
