"""A lattice of two hosts on this machine, as a development machine and a board form it.

One nats-server (the suite's fixture), Bindle and the registry on ports they pick, and two
`mlcloud host` processes labelled arch=x86_64 and arch=aarch64. deploy/coral/app.yaml must put
the HTTP side on the first and the mlinference provider on the second, and requests must cross.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlcloud.bindle.server import create_app
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.oci import EmbeddedRegistry
from mlcloud.servers import free_port, running_app
from mlcloud.settings import Settings
from mlcloud.testing.stack import PROJECT_DIR, build_models
from mlcloud.up import deploy_app

from .conftest import host_process

pytestmark = pytest.mark.slow

CORAL_APP = PROJECT_DIR / "deploy" / "coral" / "app.yaml"
CAT = PROJECT_DIR / "images" / "cat.jpg"
CAT_LABELS = {"n02124075 Egyptian cat", "n02123045 tabby, tabby cat", "n02123159 tiger cat"}
GATEWAY = {"arch": "x86_64", "role": "dev"}
BOARD = {"arch": "aarch64", "coral": "false"}


def _have_litert() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_LITERT = _have_litert()


def f32_tensor(values: list[float], dims: list[int]) -> dict:
    return {"dimensions": dims, "valueTypes": ["ValueF32"], "flags": 0,
            "data": list(struct.pack(f"<{len(values)}f", *values))}


async def wait_for(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.2)


async def test_labels_place_mlinference_on_the_board_and_matches_crosses_hosts(nats_server, nats_auth, tmp_path):
    models_build = await asyncio.to_thread(build_models)
    http_port = free_port()
    settings = Settings.from_env(
        {},
        state_dir=tmp_path / "state",
        nats_url=nats_server.url,
        # Both hosts join with host credentials and the account seed (`mlcloud host --nats-creds
        # … --nats-account-seed …`); the deploy below connects with them too.
        nats_creds=nats_auth.directory / "host.creds",
        nats_account_seed=nats_auth.account_seed_path,
        lattice=f"deploy-{uuid.uuid4().hex[:8]}",
        registry="127.0.0.1:0",
        http_address=f"127.0.0.1:{http_port}",
        rpc_timeout=16.0,  # what deploy/coral uses
        health_interval=1.0,
        heartbeat_interval=1.0,
        restart_backoff=0.2,
        stop_grace=3.0,
    )
    async with contextlib.AsyncExitStack() as stack:
        bindle_address = await stack.enter_async_context(running_app(
            create_app(tmp_path / "bindle"), "127.0.0.1:0", "the Bindle server", access_log=None))
        registry = await stack.enter_async_context(EmbeddedRegistry.from_settings(settings))
        settings = settings.replace(bindle_address=bindle_address, registry=registry.address)
        dev_log, board_log = tmp_path / "dev-host.log", tmp_path / "board-host.log"
        dev = stack.enter_context(host_process(settings, GATEWAY, dev_log))
        board = stack.enter_context(host_process(settings.replace(state_dir=tmp_path / "board"), BOARD, board_log))
        ctl = await CtlClient.connect(settings)
        stack.push_async_callback(ctl.close)

        async def two_hosts() -> bool:
            assert dev.poll() is None and board.poll() is None, dev_log.read_text() + board_log.read_text()
            return len(await ctl.get_hosts()) == 2

        await wait_for(two_hosts, 30, "both hosts on the lattice")
        await deploy_app(settings, CORAL_APP, lambda line: None, models_build, PROJECT_DIR)

        inventories = {inv.labels["arch"]: inv for inv in await ctl.get_inventories()}
        dev_inv, board_inv = inventories["x86_64"], inventories["aarch64"]
        assert dev_inv.labels["role"] == "dev" and board_inv.labels["coral"] == "false"
        assert sorted(p.name for p in board_inv.providers) == ["mlinference"]
        assert board_inv.actors == []
        assert sorted(p.name for p in dev_inv.providers) == ["httpserver"]
        assert sorted(a.name for a in dev_inv.actors) == ["api", "postprocess", "preprocess"]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as http:
            async def matches_answer() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await http.put("/mobilenetv27/matches", content=CAT.read_bytes())).status_code == 200
                return False

            # The api actor (dev host) → preprocess (dev) → mlinference (board) → postprocess (dev).
            await wait_for(matches_answer, 60, "/mobilenetv27/matches through the board")
            response = await http.put("/mobilenetv27/matches", content=CAT.read_bytes())
            top = response.json()
            assert len(top) == 5 and top[0]["label"] in CAT_LABELS, top

            # GET /metrics on the dev host gathers the board's figures too, labelled with its host.
            metrics = (await http.get("/metrics")).text
            inferred = [s.labels for f in text_string_to_metric_families(metrics) for s in f.samples
                        if s.name == "mlcloud_inference_requests_total" and s.labels["model"] == "mobilenetv27"]
            assert inferred and {labels["host"] for labels in inferred} == {board_inv.host_id}
            assert {dev_inv.host_id, board_inv.host_id} <= {
                s.labels["host"] for f in text_string_to_metric_families(metrics) for s in f.samples}

            # plus3 is the TFLite model with execution_target tpu: LiteRT on the board's CPU here.
            async def plus3() -> httpx.Response:
                return await http.post("/plus3", json=f32_tensor([1, 2, 3, 4], [1, 4]))

            # 503 ModelLoading while the board fetches and loads it; every other answer is final.
            response = await plus3()
            for _ in range(100):
                if response.status_code != 503 or response.json()["error"]["kind"] != "ModelLoading":
                    break
                await asyncio.sleep(0.2)
                response = await plus3()
            if HAVE_LITERT:
                assert response.status_code == 200, response.text
                data = bytes(response.json()["tensor"]["data"])
                assert list(np.frombuffer(data, "<f4")) == [4, 5, 6, 7]
                log = board_log.read_text()
                assert "libedgetpu.so.1 is not available" in log and "plus3-tflite on CPU" in log, log[-3000:]
            else:
                # Without ai-edge-litert the model fails to load: 503 InvalidModel (the model, not the
                # lattice, is unavailable; a fixed install helps), and the message says what to install.
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["kind"] == "InvalidModel" and "ai-edge-litert" in error["message"], error
