"""Request ids end to end (issue 16 item 4): the id a client sends, or one made for it, is in the
response and in the log line of every stage the request passed, read from the instances' log
files (``log_dir``, which the stack sets to ``state_dir/logs``).

One stack per module, without OpenTelemetry (the default path; tests/e2e/test_tracing_otel.py
runs one that exports spans), logging at DEBUG: a stage logs a call that succeeded only there.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from mlcloud.testing.stack import PROJECT_DIR, running_stack

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CAT = (PROJECT_DIR / "images" / "cat.jpg").read_bytes()
# The stages of PUT /{model}/matches, each an instance writing its own log file.
STAGES = ("httpserver", "api", "preprocess", "mlinference", "postprocess")
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("stack"), log_level="DEBUG") as running:
        yield running


def log_lines(stack, stage: str) -> list[str]:
    files = sorted((stack.settings.state_dir / "logs").glob(f"{stage}-*.log"))
    assert files, f"no log file of {stage} in {stack.settings.state_dir / 'logs'}"
    return [line for path in files for line in Path(path).read_text().splitlines()]


async def lines_with(stack, text: str, stages=STAGES, timeout: float = 10.0) -> dict[str, list[str]]:
    """Each stage's log lines that contain ``text``, once every stage has one."""
    async with asyncio.timeout(timeout):
        while True:
            found = {stage: [line for line in log_lines(stack, stage) if text in line] for stage in stages}
            if all(found.values()):
                return found
            await asyncio.sleep(0.05)


def traceparent() -> tuple[str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, f"00-{trace_id}-{span_id}-01"


async def test_a_traceparent_sent_in_is_in_the_response_and_every_stage_log_line(stack, http):
    trace_id, sent = traceparent()
    response = await http.put("/mobilenetv27/matches", content=CAT, headers={"traceparent": sent})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == trace_id
    # Without spans exported no stage makes a span of its own: the caller's parent comes back.
    assert response.headers["traceparent"] == sent
    found = await lines_with(stack, trace_id)
    assert any('"PUT /mobilenetv27/matches" 200' in line for line in found["httpserver"])
    assert any("HttpServer.HandleRequest ok" in line for line in found["api"])
    assert any("Preprocess.Convert ok" in line for line in found["preprocess"])
    assert any("MlInference.Predict ok" in line for line in found["mlinference"])
    assert any("Postprocess.Matches ok" in line for line in found["postprocess"])


async def test_an_x_request_id_sent_in_is_in_the_response_and_every_stage_log_line(stack, http):
    request_id = f"client-{uuid.uuid4()}"
    response = await http.put("/mobilenetv27/matches", content=CAT, headers={"X-Request-Id": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    assert "traceparent" not in response.headers
    await lines_with(stack, request_id)


async def test_a_request_without_an_id_gets_a_new_w3c_trace_id(stack, http):
    first = await http.put("/mobilenetv27/matches", content=CAT)
    second = await http.put("/mobilenetv27/matches", content=CAT)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(TRACE_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    await lines_with(stack, ids[1])


@pytest.mark.parametrize("header", [
    {"X-Request-Id": "evil id\" 200 0 0.1ms"},
    {"X-Request-Id": "x" * 129},
    {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
    {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
])
async def test_a_malformed_id_is_replaced_and_never_logged(stack, http, header):
    response = await http.put("/mobilenetv27/matches", content=CAT, headers=header)
    assert response.status_code == 200, response.text
    given = next(iter(header.values()))
    new_id = response.headers["x-request-id"]
    assert TRACE_ID.fullmatch(new_id) and new_id not in given.lower()
    assert "traceparent" not in response.headers
    await lines_with(stack, new_id)
    assert not any(given in line for stage in STAGES for line in log_lines(stack, stage))


async def test_an_error_answer_carries_the_id_and_is_logged_with_it(stack, http):
    request_id = f"missing-{uuid.uuid4().hex[:8]}"
    response = await http.put("/no-such-model/matches", content=CAT, headers={"X-Request-Id": request_id})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == request_id
    found = await lines_with(stack, request_id, stages=("httpserver", "api"))
    assert any("404" in line for line in found["httpserver"])
