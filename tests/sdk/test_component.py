"""What a handler sees of the request it serves (mlcloud.sdk.Context, Operation)."""

from __future__ import annotations

import threading
from typing import cast

from mlcloud import tracing
from mlcloud.interfaces import PREPROCESS
from mlcloud.sdk import Context, Operation, Runtime

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_plain_handler_in_the_pool_sees_the_request_it_serves():
    def handler(ctx: Context, request: object) -> tuple[str, str, str, bool]:
        current = tracing.current()
        return ctx.request_id, ctx.traceparent, current.request_id, threading.current_thread() is main

    main = threading.current_thread()
    ctx = Context(cast(Runtime, object()), invocation_id="req-7", caller="MAPI")
    with tracing.serving(PREPROCESS.name, "req-7", TRACEPARENT):
        request_id, traceparent, current, in_main = await Operation(PREPROCESS, handler).invoke(ctx, None)
    assert (request_id, traceparent, current, in_main) == ("req-7", TRACEPARENT, "req-7", False)


def test_a_providers_lifetime_context_names_the_request_being_served():
    lifetime = Context(cast(Runtime, object()), invocation_id="", caller="VHTTP")
    assert lifetime.request_id == ""
    with tracing.serving("PUT", "req-8"):
        assert (lifetime.request_id, lifetime.traceparent) == ("req-8", "")
