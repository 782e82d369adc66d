"""The Open Inference Protocol (KServe v2) against the real stack, spoken by tritonclient unchanged.

One stack per module, as test_pipeline.py. tritonclient.http is synchronous (gevent), so the
client lives on one thread of its own (gevent's hub is per thread) while the stack's host keeps
the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from mlcloud.testing.screenshot import CHROMIUM, washboard_page
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

T = TypeVar("T")
CAT = (PROJECT_DIR / "images" / "cat.jpg").read_bytes()


TRITON_THREAD = ThreadPoolExecutor(1, "tritonclient")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(stack):
    client = await call(triton.InferenceServerClient, stack.http_url.removeprefix("http://"), network_timeout=30.0)
    yield client
    await call(client.close)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(TRITON_THREAD, lambda: fn(*args, **kwargs))


async def refused(status: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        await call(fn, *args, **kwargs)
    assert caught.value.status() == status, caught.value
    return caught.value


async def input_name(client, model: str) -> str:
    return (await call(client.get_model_metadata, model))["inputs"][0]["name"]


def f32(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array.astype(np.float32), binary_data=binary)
    return tensor


async def test_health_and_server_metadata(client):
    assert await call(client.is_server_live)
    assert await call(client.is_server_ready)
    metadata = await call(client.get_server_metadata)
    assert metadata["name"] == "mlcloud"
    assert {"binary_tensor_data", "classification", "model_repository"} <= set(metadata["extensions"])


async def test_model_metadata_names_protocol_datatypes_and_the_bindle_version(client):
    metadata = await call(client.get_model_metadata, "plus3")
    assert metadata["name"] == "plus3" and metadata["versions"] == ["0.1.0"]
    assert [(t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("FP32", [1, 4])]
    assert [t["datatype"] for t in metadata["outputs"]] == ["FP32"]
    assert metadata["parameters"]["bindle_id"] == "plus3/0.1.0"
    assert (await call(client.get_model_metadata, "plus3", "0.1.0"))["name"] == "plus3"
    await refused("404", client.get_model_metadata, "plus3", "9.9.9")
    await refused("404", client.get_model_metadata, "no-such-model")


async def test_model_readiness_with_and_without_a_version(client):
    assert await call(client.is_model_ready, "identity")
    assert await call(client.is_model_ready, "identity", "0.2.0")
    assert not await call(client.is_model_ready, "identity", "0.1.0")
    assert not await call(client.is_model_ready, "no-such-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_plus3_adds_three(client, binary):
    values = np.array([[1.5, -2.0, 0.0, 40.25]], dtype=np.float32)
    output = (await call(client.get_model_metadata, "plus3"))["outputs"][0]["name"]
    result = await call(client.infer, "plus3", [f32(await input_name(client, "plus3"), values, binary)],
                        outputs=[triton.InferRequestedOutput(output, binary_data=binary)], model_version="0.1.0")
    np.testing.assert_array_equal(result.as_numpy(output), values + 3)
    response = result.get_response()
    assert response["model_name"] == "plus3" and response["model_version"] == "0.1.0"
    assert ("data" in response["outputs"][0]) is not binary


async def test_identity_answers_every_output_in_binary_when_none_is_named(client):
    values = np.arange(4, dtype=np.float32).reshape(1, 4)
    result = await call(client.infer, "identity", [f32(await input_name(client, "identity"), values, True)])
    [output] = result.get_response()["outputs"]
    assert output["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(result.as_numpy(output["name"]), values)


async def test_a_jpeg_as_bytes_is_classified_with_labels(client):
    image = triton.InferInput(await input_name(client, "mobilenetv27"), [1], "BYTES")
    image.set_data_from_numpy(np.array([CAT], dtype=np.object_))
    output = (await call(client.get_model_metadata, "mobilenetv27"))["outputs"][0]["name"]
    result = await call(client.infer, "mobilenetv27", [image],
                        outputs=[triton.InferRequestedOutput(output, class_count=5)])
    classes = [c.decode() for c in result.as_numpy(output).reshape(-1)]
    assert len(classes) == 5
    scores = [float(c.split(":")[0]) for c in classes]
    assert scores == sorted(scores, reverse=True)
    assert any(c.split(":", 2)[2] == "n02124075 Egyptian cat" for c in classes), classes


async def test_wrong_shapes_datatypes_and_unknown_models_are_refused(client):
    name = await input_name(client, "plus3")
    await refused("400", client.infer, "plus3", [f32(name, np.zeros((1, 5)), True)])
    wrong_type = triton.InferInput(name, [1, 4], "INT64")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), dtype=np.int64))
    await refused("400", client.infer, "plus3", [wrong_type])
    await refused("400", client.infer, "plus3", [f32("not-its-input", np.zeros((1, 4)), False)])
    await refused("404", client.infer, "no-such-model", [f32(name, np.zeros((1, 4)), False)])
    await refused("404", client.infer, "plus3", [f32(name, np.zeros((1, 4)), False)], model_version="2.0.0")


async def test_errors_are_a_string_on_protocol_routes_and_an_object_on_mlclouds(http):
    response = await http.get("/v2/models/no-such-model")
    assert response.status_code == 404 and isinstance(response.json()["error"], str)
    response = await http.get("/models/no-such-model")
    assert response.status_code == 404 and response.json()["error"]["kind"] == "ContextNotFound"
    response = await http.get("/models/plus3")
    assert response.status_code == 200 and response.json()["bindle_id"] == "plus3/0.1.0"


async def test_repository_index_unload_and_load(client, http):
    index = {m["name"]: m for m in await call(client.get_model_repository_index)}
    assert index["identity"]["state"] == "READY" and index["identity"]["version"] == "0.2.0"
    assert index["plus3-tflite"]["state"] == "UNAVAILABLE"  # a bindle no route serves

    await call(client.unload_model, "plus3")
    assert not await call(client.is_model_ready, "plus3")
    index = {m["name"]: m for m in await call(client.get_model_repository_index)}
    assert index["plus3"]["state"] == "UNAVAILABLE"
    await refused("404", client.infer, "plus3", [f32(await input_name(client, "identity"), np.zeros((1, 4)), True)])

    await call(client.load_model, "plus3")
    assert await call(client.is_model_ready, "plus3")

    # A bindle by its name, then a route swapped to another bindle (mlcloud's bindle_id parameter).
    await call(client.load_model, "plus3-tflite")
    assert (await call(client.get_model_metadata, "plus3-tflite"))["versions"] == ["0.1.0"]
    response = await http.post("/v2/repository/models/plus3-tflite/load",
                               json={"parameters": {"bindle_id": "plus3/0.1.0"}})
    assert response.status_code == 200, response.text
    assert (await call(client.get_model_metadata, "plus3-tflite"))["parameters"]["bindle_id"] == "plus3/0.1.0"
    await call(client.unload_model, "plus3-tflite")
    ready = (await http.post("/v2/repository/index", json={"ready": True})).json()
    assert "plus3-tflite" not in {m["name"] for m in ready} and "plus3" in {m["name"] for m in ready}

    response = await http.post("/v2/repository/models/no-such-bindle/load")
    assert response.status_code == 404 and isinstance(response.json()["error"], str)


async def mlcloud_ctl(stack, *args: str) -> str:
    """``mlcloud ctl ARGS`` as a user runs it, against the stack (in a subprocess: the host answers here)."""
    env = {**os.environ, "MLCLOUD_NATS_URL": stack.settings.nats_url, "MLCLOUD_LATTICE": stack.settings.lattice,
           "MLCLOUD_NATS_CREDS": str(stack.settings.nats_creds), "MLCLOUD_STATE_DIR": str(stack.settings.state_dir)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "mlcloud.cli", "ctl", *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_cli_uses_the_same_repository_operations(stack, client):
    index = {m["name"]: m for m in json.loads(await mlcloud_ctl(stack, "model", "index", "--json"))}
    assert index["identity"]["state"] == "READY" and index["plus3-tflite"]["bindle_id"] == "plus3-tflite/0.1.0"
    assert "identity (identity_model/0.2.0) unloaded" in await mlcloud_ctl(stack, "model", "unload", "identity")
    assert not await call(client.is_model_ready, "identity")
    assert "identity serves identity_model/0.2.0" in await mlcloud_ctl(stack, "model", "load", "identity")
    assert await call(client.is_model_ready, "identity")


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium")
async def test_the_washboard_unloads_and_loads_from_the_page(stack, client):
    async with washboard_page(stack.settings) as page:
        plus3 = page.locator("#models tbody tr[data-route='plus3']")
        await plus3.get_by_role("button", name="Unload…", exact=True).click()
        await page.click("#dialog-confirm")
        await plus3.wait_for(state="detached")
        assert not await call(client.is_model_ready, "plus3")

        identity = page.locator("#models tbody tr[data-route='identity']")
        await identity.get_by_role("button", name="Load…", exact=True).click()
        await page.fill("#load-route", "plus3")  # the route's own bindle, from its link
        await page.click("#dialog-confirm")
        await plus3.locator(".badge").wait_for()
        assert await call(client.is_model_ready, "plus3")

