"""The inference pipeline end to end: real HTTP against the real stack (issue 6, DESIGN §4).

One stack per module (starting it takes a few seconds): NATS, Bindle, the registry, a host
running the signed components of deploy/app.yaml, the models built and pushed.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import struct
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from mlcloud.interfaces import MLINFERENCE
from mlcloud.lattice.control import LinkDefinition
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

IMAGES = PROJECT_DIR / "images"
CAT_LABELS = {"n02124075 Egyptian cat", "n02123045 tabby, tabby cat", "n02123159 tiger cat"}


def f32_tensor_json(values: list[float], dims: list[int]) -> dict:
    data = list(struct.pack(f"<{len(values)}f", *values))
    return {"dimensions": dims, "valueTypes": ["ValueF32"], "flags": 0, "data": data}


def tensor_values(body: dict) -> list[float]:
    return list(np.frombuffer(bytes(body["tensor"]["data"]), dtype="<f4"))


async def api_link(stack) -> LinkDefinition:
    return next(link for link in await stack.ctl.get_links() if link.contract_id == MLINFERENCE)


async def relink(stack, values: dict) -> None:
    link = await api_link(stack)
    await stack.ctl.put_link(link.actor_id, link.provider_id, MLINFERENCE, link.link_name, values)


async def wait_for(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def test_cat_photo_matches_a_cat(http):
    response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
    assert response.status_code == 200, response.text
    matches = response.json()
    assert len(matches) == 5
    assert matches[0]["label"] in CAT_LABELS
    assert all(set(m) == {"label", "probability"} for m in matches)
    probabilities = [m["probability"] for m in matches]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.5
    assert response.headers["x-model"] == "efficientnet-lite0/1.0.0"


# ImageNet has no "rocket": EfficientNet-Lite0 calls the photo a missile (p ≈ 0.26), then a
# projectile (0.14), then a space shuttle (0.09); the fourth (an oil rig, 0.06) is no rocket.
ROCKET_LABELS = {"n03773504 missile", "n04008634 projectile, missile", "n04266014 space shuttle"}


@pytest.mark.parametrize("image, top_labels", [("coffee.jpg", {"n07920052 espresso"}), ("rocket.jpg", ROCKET_LABELS)])
async def test_other_photos_and_top_parameter(http, image, top_labels):
    response = await http.put("/efficientnetlite0/matches?top=3", content=(IMAGES / image).read_bytes())
    assert response.status_code == 200
    labels = [match["label"] for match in response.json()]
    assert len(labels) == 3 and labels[0] in top_labels, labels
    if image == "rocket.jpg":
        assert set(labels) == ROCKET_LABELS  # all three guesses are rocket-like


async def test_png_with_alpha_and_grey_images_are_classified(http):
    for mode in ("RGBA", "L", "P"):
        buffer = io.BytesIO()
        Image.open(IMAGES / "cat.jpg").convert(mode).save(buffer, "PNG")
        response = await http.put("/mobilenetv27/matches", content=buffer.getvalue())
        assert response.status_code == 200, (mode, response.text)


async def test_identity_and_plus3_answer_in_the_original_json_shape(http):
    tensor = f32_tensor_json([1, 2, 3, 4], [1, 4])
    identity = await http.post("/identity", json=tensor)
    assert identity.status_code == 200
    assert identity.json()["result"] == "Success"
    assert identity.json()["tensor"]["dimensions"] == [1, 4]
    assert identity.json()["tensor"]["valueTypes"] == ["ValueF32"]
    assert identity.json()["tensor"]["data"] == tensor["data"]
    plus3 = await http.put("/plus3", json=tensor)
    assert plus3.status_code == 200
    assert tensor_values(plus3.json()) == [4, 5, 6, 7]


async def test_preprocess_route_returns_the_raw_output(http):
    response = await http.put("/mobilenetv27/preprocess", content=(IMAGES / "cat.jpg").read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "Success" and body["tensor"]["dimensions"] == [1, 1000]
    assert int(np.argmax(tensor_values(body))) == 285  # Egyptian cat


async def test_health_and_model_metadata(http):
    assert (await http.get("/v2/health/live")).status_code == 200
    ready = await http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = (await http.get("/models/mobilenetv27")).json()
    assert info["bindle_id"] == "efficientnet-lite0/1.0.0" and info["state"] == "READY"
    assert info["engine"] == "onnxruntime"
    # The metadata declares the ImageNet normalisation, so images travel as 8-bit pixels; the batch
    # dimension is symbolic (-1), so adaptive batching can stack requests.
    assert info["inputs"] == [{"name": "input", "shape": [-1, 3, 224, 224], "datatype": "ValueF32",
                               "image_datatype": "ValueU8"}]
    assert info["outputs"][0]["shape"] == [-1, 1000]


@pytest.mark.parametrize(
    "method, path, kwargs, status, kind",
    [
        ("POST", "/plus3", {"content": b"{not json"}, 400, "RequestError"),
        ("POST", "/plus3", {"json": {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "data": [0, 0, 128]}},
         400, "CorruptInputTensor"),
        ("POST", "/plus3", {"json": f32_tensor_json([1, 2, 3], [1, 3])}, 400, "CorruptInputTensor"),
        ("POST", "/plus3", {"json": {"dimensions": [1, 4], "valueTypes": ["ValueNope"], "data": []}},
         400, "CorruptInputTensor"),
        ("PUT", "/mobilenetv27/matches", {"content": b""}, 400, "RequestError"),
        ("PUT", "/mobilenetv27/matches", {"content": b"\xff\xd8\xff\xe0 truncated jpeg"}, 400, "RequestError"),
        ("PUT", "/mobilenetv27/matches?top=0", {"content": "cat"}, 400, "RequestError"),
        ("PUT", "/mobilenetv27/matches?top=many", {"content": "cat"}, 400, "RequestError"),
        ("PUT", "/nosuchmodel/matches", {"content": "cat"}, 404, "ContextNotFound"),
        ("POST", "/nosuchmodel", {"json": f32_tensor_json([1, 2, 3, 4], [1, 4])}, 404, "ContextNotFound"),
        ("GET", "/a/b/c/d", {}, 404, "NotFound"),
        ("GET", "/models/nosuchmodel", {}, 404, "ContextNotFound"),
        ("GET", "/mobilenetv27/matches", {}, 405, "MethodNotAllowed"),
        ("DELETE", "/plus3", {}, 405, "MethodNotAllowed"),
        ("PUT", "/mobilenetv27/matches", {"content": b"%PDF-1.4 not an image"}, 415, "UnsupportedMediaType"),
        ("PUT", "/mobilenetv27/matches", {"content": b"{}", "headers": {"content-type": "application/json"}},
         415, "UnsupportedMediaType"),
    ],
)
async def test_errors_have_the_right_status_and_a_json_body(http, method, path, kwargs, status, kind):
    if kwargs.get("content") == "cat":
        kwargs = {"content": (IMAGES / "cat.jpg").read_bytes()}
    response = await http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["kind"] == kind
    assert response.json()["error"]["message"]


async def test_body_over_the_limit_is_413(http, stack):
    response = await http.put("/mobilenetv27/matches", content=b"\0" * (stack.settings.max_body_bytes + 1))
    assert response.status_code == 413
    assert response.json()["error"]["kind"] == "PayloadTooLarge"


async def test_decompression_bomb_is_refused(http):
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, "PNG")  # tiny file, 144 M pixels
    response = await http.put("/mobilenetv27/matches", content=buffer.getvalue())
    assert response.status_code == 413
    assert response.json()["error"]["kind"] == "PayloadTooLarge"


async def test_tract_and_onnxruntime_give_the_same_top5(http, stack):
    link = await api_link(stack)
    await relink(stack, {**link.values, "tractnet": "efficientnet-lite0/1.0.0", "engine.tractnet": "tract"})

    async def tract_ready():
        return (await http.get("/models/tractnet")).json().get("state") == "READY"

    await wait_for(tract_ready)
    assert (await http.get("/models/tractnet")).json()["engine"] == "tract"
    for image in ("cat.jpg", "coffee.jpg", "grace_hopper.jpg", "motorcycle.jpg"):
        body = (IMAGES / image).read_bytes()
        ort = (await http.put("/mobilenetv27/matches", content=body)).json()
        tract = (await http.put("/tractnet/matches", content=body)).json()
        assert [m["label"] for m in ort] == [m["label"] for m in tract], image
        assert np.allclose([m["probability"] for m in ort], [m["probability"] for m in tract], atol=1e-4)
    await relink(stack, link.values)


async def test_unknown_bindle_reports_the_failure_with_503(http, stack):
    link = await api_link(stack)
    await relink(stack, {**link.values, "ghost": "no-such-model/9.9.9"})

    async def failed():
        return (await http.get("/models/ghost")).json().get("state") == "FAILED"

    await wait_for(failed)
    response = await http.post("/ghost", json=f32_tensor_json([1, 2, 3, 4], [1, 4]))
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "no-such-model/9.9.9" in response.json()["error"]["message"]
    assert (await http.get("/v2/health/ready")).status_code == 503
    await relink(stack, link.values)


async def test_model_swap_under_load_fails_no_request(http, stack):
    link = await api_link(stack)
    tensor = f32_tensor_json([1, 2, 3, 4], [1, 4])
    results: list[tuple[int, list[float]]] = []
    stop = asyncio.Event()

    async def client():
        while not stop.is_set():
            response = await http.post("/plus3", json=tensor)
            ok = response.status_code == 200
            results.append((response.status_code, tensor_values(response.json()) if ok else []))

    clients = [asyncio.create_task(client()) for _ in range(8)]
    await asyncio.sleep(0.5)
    await relink(stack, {**link.values, "plus3": "identity_model/0.2.0"})

    async def swapped():
        return (await http.get("/models/plus3")).json()["bindle_id"] == "identity_model/0.2.0"

    await wait_for(swapped)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    await relink(stack, link.values)
    statuses = {status for status, _ in results}
    assert statuses == {200}, [r for r in results if r[0] != 200][:3]
    outputs = {tuple(values) for _, values in results}
    assert outputs == {(4, 5, 6, 7), (1, 2, 3, 4)}  # served by plus3, then by identity
    assert len(results) > 50


async def test_timeout_is_504(http, stack):
    links = await stack.ctl.get_links()
    http_link = next(link for link in links if link.contract_id == "wasmcloud:httpserver")
    fast = {**http_link.values, "timeout": "0.001"}
    await stack.ctl.put_link(http_link.actor_id, http_link.provider_id, http_link.contract_id, values=fast)
    try:
        async def times_out():
            try:
                response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
                return response.status_code == 504
            except httpx.TransportError:  # the server is being re-bound with the new values
                return False

        await wait_for(times_out)
        response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
        assert response.json()["error"]["kind"] == "RpcTimeout"
    finally:
        await stack.ctl.put_link(http_link.actor_id, http_link.provider_id, http_link.contract_id,
                                 values=http_link.values)

    async def healthy_again():
        try:
            return (await http.get("/v2/health/live")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(healthy_again)


async def test_killed_inference_provider_comes_back_with_its_models(http, stack):
    inventory = await stack.ctl.get_inventory(stack.host.id)
    provider = next(p for p in inventory.providers if p.name == "mlinference")
    pid = provider.instances[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def classifies():
        try:
            response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json()[0]["label"] in CAT_LABELS

    await wait_for(classifies)


async def test_a_stopped_stage_of_the_chain_is_a_prompt_503_and_serving_resumes_when_it_is_back(http, stack):
    inventory = await stack.ctl.get_inventory(stack.host.id)
    postprocess = next(a for a in inventory.actors if a.name == "postprocess")
    await stack.ctl.stop_actor(stack.host.id, postprocess.id)
    try:
        started = time.monotonic()
        response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and response.json()["error"]["kind"] == "NoResponders"
        assert "Postprocess.Matches" in response.json()["error"]["message"]
        assert elapsed < stack.settings.rpc_timeout / 2, "the stage before it says so; nobody waits for the deadline"
        # The chain's other routes do not need the stopped actor.
        response = await http.put("/mobilenetv27/preprocess", content=(IMAGES / "cat.jpg").read_bytes())
        assert response.status_code == 200
    finally:
        await stack.ctl.start_actor(stack.host.id, postprocess.image_ref, 1)

    async def classifies():
        response = await http.put("/mobilenetv27/matches", content=(IMAGES / "cat.jpg").read_bytes())
        return response.status_code == 200 and response.json()[0]["label"] in CAT_LABELS

    await wait_for(classifies)



async def test_a_model_whose_invoice_is_not_signed_by_a_trusted_creator_never_loads(http, stack):
    import msgspec

    from mlcloud.bindle import AsyncClient, load_invoice_dir

    invoice, files = load_invoice_dir(PROJECT_DIR / "models" / "build" / "identity_model-0.2.0")
    copy = msgspec.structs.replace(invoice, bindle=msgspec.structs.replace(invoice.bindle, name="unsigned-identity"))
    async with AsyncClient(stack.settings.effective_bindle_url) as bindle:
        await bindle.push(copy, files)  # no creator: only the server's host signature
    link = await api_link(stack)
    await relink(stack, {**link.values, "unsigned": copy.id})

    async def failed():
        return (await http.get("/models/unsigned")).json().get("state") == "FAILED"

    await wait_for(failed)
    reason = (await http.get("/models/unsigned")).json()["reason"]
    assert "invoice unsigned-identity/0.2.0 is not signed by a trusted creator" in reason
    response = await http.post("/unsigned", json=f32_tensor_json([1, 2, 3, 4], [1, 4]))
    assert response.status_code == 503 and "not signed by a trusted creator" in response.json()["error"]["message"]
    await relink(stack, link.values)
