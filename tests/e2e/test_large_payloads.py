"""Payloads past NATS's max_payload end to end (issue 16, item 5): a 50 MB image, a large tensor both
ways, 413 past the body limit, and the chunk bucket empty afterwards. One stack per module, as
test_pipeline.py; its nats-server has the embedded server's max_payload (8 MiB), tests/lattice/test_chunks.py
NATS's default (1 MiB).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from mlcloud.lattice import subjects
from mlcloud.lattice.auth import Credentials, auth_dir
from mlcloud.lattice.connect import connect
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MB = 1024 * 1024


@pytest_asyncio.fixture(loop_scope="module")
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """images/cat.jpg upscaled to 4100×4100 and saved as a PNG without compression: 50.4 MB of
    file, 16.8 M pixels (under the preprocess actor's decompression-bomb guard of 50 M). Not a
    TIFF: the preprocess actor takes JPEG, PNG, GIF, BMP and WebP only (a TIFF is a 415)."""
    buffer = io.BytesIO()
    with Image.open(PROJECT_DIR / "images" / "cat.jpg") as cat:
        cat.convert("RGB").resize((4100, 4100), Image.Resampling.BILINEAR).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


async def chunk_bucket_messages(stack) -> int:
    """What the lattice's chunk bucket holds, read with a host's rights."""
    nc = await connect(stack.settings.effective_nats_url, name="test",
                       credentials=Credentials.load(auth_dir(stack.settings) / "host.creds"))
    try:
        info = await nc.jetstream().stream_info(f"OBJ_{subjects.chunk_bucket(stack.settings.lattice)}")
        return info.state.messages
    finally:
        await nc.close()


async def instance_pids(stack, *names: str) -> dict[str, int]:
    inventory = await stack.ctl.get_inventory(stack.host.id)
    pids = {c.name: c.instances[0].pid for c in [*inventory.actors, *inventory.providers] if c.name in names}
    assert set(pids) == set(names) and all(pids.values()), pids
    return pids  # type: ignore[return-value]


def status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/{pid}/status, in kB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


async def test_a_50_mb_image_is_classified_correctly_holding_at_most_3_copies_in_a_process(http, stack, big_png):
    """Each process on the image's path holds at most 3 copies of it at once: its peak resident
    memory during the request (VmHWM, reset first) less its resident memory before, over the size."""
    assert len(big_png) > 50_000_000 > 5 * stack.nats.max_payload
    pids = await instance_pids(stack, "httpserver", "api", "preprocess")
    before = {}
    for name, pid in pids.items():
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        before[name] = status_kb(pid, "VmRSS")
    response = await http.put("/mobilenetv27/matches", content=big_png)
    assert response.status_code == 200, response.text
    labels = [match["label"] for match in response.json()]
    assert "n02124075 Egyptian cat" in labels
    copies = {name: (status_kb(pid, "VmHWM") - before[name]) * 1024 / len(big_png) for name, pid in pids.items()}
    print("copies of the image held at once:", {name: round(c, 2) for name, c in copies.items()})
    assert all(c <= 3 for c in copies.values()), copies
    assert await chunk_bucket_messages(stack) == 0


async def test_a_large_tensor_round_trips_both_ways(http, stack):
    """plus3-tflite takes any batch ([-1, 4]): 16 MB of binary FP32 in and out through /v2."""
    assert (await http.post("/v2/repository/models/plus3-tflite/load")).status_code == 200
    metadata = (await http.get("/v2/models/plus3-tflite")).json()
    rows = 1_000_000
    values = np.arange(rows * 4, dtype="<f4").reshape(rows, 4)
    header = json.dumps({
        "inputs": [{"name": metadata["inputs"][0]["name"], "shape": [rows, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes}}],
        "outputs": [{"name": metadata["outputs"][0]["name"], "parameters": {"binary_data": True}}],
    }).encode()
    response = await http.post("/v2/models/plus3-tflite/infer", content=header + values.tobytes(), headers={
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    json_length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.content[:json_length])
    assert answer["outputs"][0]["shape"] == [rows, 4]
    result = np.frombuffer(response.content[json_length:], dtype="<f4").reshape(rows, 4)
    assert np.array_equal(result, values + 3)
    assert await chunk_bucket_messages(stack) == 0


@pytest.mark.parametrize("path", ["/mobilenetv27/matches", "/v2/models/mobilenetv27/infer"])
async def test_a_body_past_the_limit_is_413_with_a_clear_message(http, stack, path):
    limit = stack.settings.max_body_bytes
    response = await http.request("PUT" if "matches" in path else "POST", path, content=os.urandom(limit + 1))
    assert response.status_code == 413
    error = response.json()["error"]
    message = error if path.startswith("/v2") else error["message"]
    assert f"larger than the limit of {limit} bytes" in message
