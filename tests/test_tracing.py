"""Request ids and trace context (mlcloud/tracing.py): parsing what clients send, the current
request of a task, the log filter, and that without OpenTelemetry configured nothing of it loads."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
import sys

import pytest

from mlcloud import tracing
from mlcloud.tracing import TraceParent, from_headers, valid_request_id

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"


def test_a_w3c_traceparent_is_parsed_and_written_back_the_same():
    parent = TraceParent.parse(VALID)
    assert parent == TraceParent(TRACE_ID, SPAN_ID, 1)
    assert str(parent) == VALID
    assert TraceParent.parse(f" 00-{TRACE_ID}-{SPAN_ID}-00 ") == TraceParent(TRACE_ID, SPAN_ID, 0)


def test_a_later_version_may_carry_more_fields_version_00_may_not():
    assert TraceParent.parse(f"01-{TRACE_ID}-{SPAN_ID}-01-what-comes-next") == TraceParent(TRACE_ID, SPAN_ID, 1)
    assert TraceParent.parse(f"00-{TRACE_ID}-{SPAN_ID}-01-more") is None


@pytest.mark.parametrize("value", [
    "",
    "garbage",
    VALID.upper(),                                   # W3C: lowercase hex only
    f"ff-{TRACE_ID}-{SPAN_ID}-01",                   # version ff is invalid
    f"00-{'0' * 32}-{SPAN_ID}-01",                   # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",                  # all-zero parent id
    f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",              # short trace id
    f"00-{TRACE_ID}-{SPAN_ID}-1",                    # short flags
    f"00-{TRACE_ID}-{SPAN_ID}-01\nforged log line",
    f"01-{TRACE_ID}-{SPAN_ID}-01-" + "x" * 600,      # longer than any header worth reading
])
def test_a_malformed_traceparent_is_none(value):
    assert TraceParent.parse(value) is None


@pytest.mark.parametrize("value", ["b3c1a-7", "0f8fad5b-d9cb-469f-a165-70867728950e", "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                   "YWJj+/==", "req:42@edge.example", "x" * 128])
def test_plain_tokens_are_request_ids(value):
    assert valid_request_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "two words", "line\nbreak", "tab\tbed", 'quote"d', "é", "a;b",
                                   "<script>"])
def test_anything_else_is_no_request_id(value):
    assert valid_request_id(value) is None


def test_the_request_id_is_the_x_request_id_else_the_trace_id_else_left_to_make():
    assert from_headers({"X-Request-Id": "abc", "traceparent": VALID}) == ("abc", TraceParent(TRACE_ID, SPAN_ID, 1))
    assert from_headers({"traceparent": VALID}) == (TRACE_ID, TraceParent(TRACE_ID, SPAN_ID, 1))
    assert from_headers({"X-Request-Id": "a b", "traceparent": VALID}) == (TRACE_ID, TraceParent(TRACE_ID, SPAN_ID, 1))
    assert from_headers({"X-Request-Id": "abc", "traceparent": "00-nonsense"}) == ("abc", None)
    assert from_headers({}) == ("", None)


def test_serving_makes_the_request_current_and_then_restores_the_one_before():
    assert tracing.current() == tracing.Trace()
    with tracing.serving("Op.Outer", "outer", VALID) as outer:
        assert tracing.current() == outer.trace == tracing.Trace("outer", VALID)
        with tracing.serving("Op.Inner", "inner"):
            assert tracing.current().request_id == "inner"
        assert tracing.current().request_id == "outer"
    assert tracing.current() == tracing.Trace()


def test_a_request_without_an_id_gets_a_new_trace_id():
    with tracing.serving("GET", "") as served:
        made = served.trace.request_id
    with tracing.serving("GET", "") as served:
        assert served.trace.request_id != made
    assert tracing.TraceParent.parse(f"00-{made}-{SPAN_ID}-01") is not None


async def test_concurrent_tasks_each_log_their_own_request_id():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.tracing")
    handler = tracing.add_request_ids(Keep())
    logger.addHandler(handler)
    logger.propagate = False

    async def serve(request_id: str) -> None:
        with tracing.serving("Op.X", request_id):
            await asyncio.sleep(0.01)
            logger.warning("in %s", request_id)
            # A plain handler runs in the loop's pool with the task's context (Operation.invoke).
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, contextvars.copy_context().run, logger.warning, "thread of %s",
                                       request_id)

    try:
        await asyncio.gather(*(serve(f"r{i}") for i in range(5)))
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert {(r.getMessage(), r.request_id) for r in records} == {
        *((f"in r{i}", f"r{i}") for i in range(5)), *((f"thread of r{i}", f"r{i}") for i in range(5)),
        ("outside", tracing.NO_REQUEST),
    }


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


SERVE_AND_LIST_MODULES = """
import sys
from mlcloud import tracing
import mlcloud.host.runner, mlcloud.lattice.rpc
print(tracing.setup("api", "i1"))
with tracing.serving("Op.X", "r1"):
    pass
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_without_an_otlp_endpoint_nothing_of_opentelemetry_is_imported():
    done = _run(SERVE_AND_LIST_MODULES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False", "[]"]


def test_an_endpoint_without_the_extra_installed_is_said_once_and_serving_goes_on():
    code = "import sys; sys.modules['opentelemetry'] = None\n" + SERVE_AND_LIST_MODULES
    done = _run(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "False"
    assert "pip install 'mlcloud[otel]'" in done.stderr


def test_otel_sdk_disabled_turns_export_off():
    done = _run(SERVE_AND_LIST_MODULES, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true")
    assert done.stdout.split("\n")[:2] == ["False", "[]"]
