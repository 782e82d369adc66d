"""Verifiable answers against the real stack: every inference answer names the bindle and the sha256
of the model file that made it (``X-Model``, ``X-Model-Sha256``), also answer by answer across a
version update, and ``mlcloud verify`` checks them against the Bindle server's signed invoice.

The sync ``mlcloud.deploy`` and the CLI run in a worker thread: the stack's host shares the test's
event loop, which a blocking call on it would stall.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import mlcloud
from mlcloud.bindle import AsyncClient
from mlcloud.cli import main
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CAT = (PROJECT_DIR / "images" / "cat.jpg").read_bytes()
X, Y = load_iris(return_X_y=True)


async def model_parcel(stack, bindle_id: str) -> str:
    """The sha256 of the bindle's model parcel, as its invoice on the Bindle server says."""
    async with AsyncClient(stack.settings.effective_bindle_url) as client:
        invoice = await client.get_invoice(bindle_id)
    [sha256] = [p.label.sha256 for p in invoice.parcels if "model" in (p.conditions.member_of or [])]
    return sha256


def named(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 200, response.text
    return response.headers["x-model"], response.headers["x-model-sha256"]


async def served(http: httpx.AsyncClient, route: str) -> str:
    bindle_id: str = (await http.get(f"/models/{route}")).json()["bindle_id"]
    return bindle_id


async def verify_cli(stack, *args: str, stdin: str = "") -> tuple[int, str]:
    """``mlcloud verify ARGS`` with the stack's settings (its Bindle server, its trusted account)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["verify", *args], input=stdin,
                                     env=stack.settings.to_env())
    return result.exit_code, result.output


async def test_every_inference_route_names_the_bindle_and_model_parcel_of_its_invoice(stack, http):
    cat = await served(http, "mobilenetv27")
    expected = (cat, await model_parcel(stack, cat))
    assert named(await http.put("/mobilenetv27/matches", content=CAT)) == expected
    assert named(await http.put("/mobilenetv27/preprocess", content=CAT)) == expected
    name = (await http.get("/v2/models/mobilenetv27")).json()["inputs"][0]["name"]
    body, length = binary_infer(name, CAT)
    infer = await http.post("/v2/models/mobilenetv27/infer", content=body,
                            headers={"Inference-Header-Content-Length": str(length)})
    assert named(infer) == expected
    identity = await served(http, "identity")
    tensor = {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "data": list(np.ones(4, "<f4").tobytes())}
    assert named(await http.post("/identity", json=tensor)) == (identity, await model_parcel(stack, identity))
    # mlcloud's own model view names the same sha256.
    assert (await http.get("/models/mobilenetv27")).json()["sha256"] == expected[1]


def binary_infer(name: str, image: bytes) -> tuple[bytes, int]:
    """An Open Inference Protocol request with one JPEG as a binary BYTES element, and its JSON
    header's length."""
    element = len(image).to_bytes(4, "little") + image
    header = json.dumps({"inputs": [{"name": name, "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(element)}}]}).encode()
    return header + element, len(header)


async def test_a_tabular_route_names_each_version_answer_by_answer_across_an_update_and_verifies(stack, http):
    first_model = LogisticRegression(max_iter=500).fit(X, Y)
    first = await asyncio.to_thread(mlcloud.deploy, first_model, "flower", sample=X[:5],
                                    settings=stack.settings, progress=lambda _: None)
    rows = {"instances": X[::10].tolist()}
    answer = await http.post("/flower/predict?proba=1", json=rows)
    parcel = await model_parcel(stack, "flower/1.0.0")
    assert named(answer) == (first.bindle_id, first.sha256) == ("flower/1.0.0", parcel)
    assert first.sha256 == (await http.get("/models/flower")).json()["sha256"]
    verdicts = await asyncio.to_thread(mlcloud.verify, answer.headers, settings=stack.settings)
    assert [(v.source.bindle_id, v.ok) for v in verdicts] == [("flower/1.0.0", True)]

    # During the swap each answer names the model that made it: its probabilities are that model's.
    second_model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)
    proba = {"flower/1.0.0": first_model.predict_proba(X[::10]), "flower/2.0.0": second_model.predict_proba(X[::10])}
    seen: list[str] = []
    swapping = True

    async def ask() -> None:
        while swapping:
            reply = await http.post("/flower/predict?proba=1", json=rows)
            bindle_id, _ = named(reply)
            np.testing.assert_allclose(reply.json()["predictions"], proba[bindle_id], atol=1e-4)
            seen.append(bindle_id)

    clients = [asyncio.create_task(ask()) for _ in range(3)]
    second = await asyncio.to_thread(mlcloud.deploy, second_model, "flower", version="2.0.0", sample=X[:5],
                                     settings=stack.settings, progress=lambda _: None)
    await asyncio.sleep(1.5)  # past the api's catalog cache: answers of the new model only now
    swapping = False
    await asyncio.gather(*clients)
    assert seen[0] == "flower/1.0.0" and seen[-1] == "flower/2.0.0"
    answer = await http.post("/flower/predict", json=rows)
    assert named(answer) == (second.bindle_id, second.sha256) != (first.bindle_id, first.sha256)
    assert second.sha256 == await model_parcel(stack, "flower/2.0.0")

    url = f"{stack.http_url}/flower/predict"
    code, output = await verify_cli(stack, url, "-d", json.dumps(rows))
    assert code == 0, output
    assert "model   flower/2.0.0" in output and f"sha256  {second.sha256}" in output and "VERIFIED" in output


async def test_verify_fails_on_a_tampered_sha256_an_unknown_bindle_and_the_metadata_parcel(stack, http, tmp_path):
    answer = await http.put("/mobilenetv27/matches", content=CAT)
    bindle_id, sha256 = named(answer)
    saved = tmp_path / "answer.txt"
    lines = [f"HTTP/1.1 {answer.status_code} OK", *(f"{k}: {v}" for k, v in answer.headers.items()), "", answer.text]
    saved.write_text("\r\n".join(lines))
    code, output = await verify_cli(stack, "--headers", str(saved))
    assert code == 0 and output.endswith("VERIFIED\n"), output

    tampered = sha256[:-1] + ("0" if sha256[-1] != "0" else "1")
    saved.write_text(saved.read_text().replace(sha256, tampered))
    code, output = await verify_cli(stack, "--headers", str(saved))
    assert code == 1 and "FAIL sha256" in output and "is not the invoice's model parcel" in output, output
    assert output.endswith("NOT VERIFIED\n")

    async with AsyncClient(stack.settings.effective_bindle_url) as client:
        invoice = await client.get_invoice(bindle_id)
    [metadata] = [p.label.sha256 for p in invoice.parcels if "metadata" in (p.conditions.member_of or [])]
    verdicts = await asyncio.to_thread(mlcloud.verify, {"X-Model": bindle_id, "X-Model-Sha256": metadata},
                                       settings=stack.settings)
    assert not verdicts[0].ok and "of another group" in verdicts[0].checks[-1].what
    verdicts = await asyncio.to_thread(mlcloud.verify, {"X-Model": "nobody/9.9.9", "X-Model-Sha256": sha256},
                                       settings=stack.settings)
    assert not verdicts[0].ok and verdicts[0].checks[0].what.startswith("no invoice nobody/9.9.9")

    code, output = await verify_cli(stack, "--headers", "-", stdin="HTTP/1.1 200 OK\r\nServer: elsewhere\r\n\r\n")
    assert code == 2 and "no X-Model and X-Model-Sha256 headers" in output, output
