"""Gathering every process's Prometheus figures over the lattice: one request, many answers.

A scrape is a NATS request on ``wasmbus.metrics.{lattice}`` that every host and every instance
subscribes to (no queue group), each answering with its own :class:`MetricsReport` (msgpack).
The gatherer, the httpserver for ``GET /metrics``, takes answers until every instance the hosts
named (``MetricsReport.expect``) has answered and ``SETTLE`` seconds have passed (time for other
hosts to answer), or until its deadline. No figure travels on the request path: a scrape costs
one message per process, when Prometheus asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mlcloud.errors import LatticeUnavailable
from mlcloud.lattice import subjects
from mlcloud.lattice.control import MetricsReport
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

SETTLE = 0.1  # seconds every scrape waits for hosts it has not heard from yet

_decode = msgspec.msgpack.Decoder(MetricsReport).decode


async def answer_scrapes(nc: NATS, lattice: str, report: Callable[[], MetricsReport]) -> Subscription:
    """Answer every scrape of ``lattice`` with ``report()`` until the subscription ends."""
    async def on_scrape(msg: Msg) -> None:
        if not msg.reply:
            return
        with contextlib.suppress(LatticeUnavailable), nats_errors("a metrics report", msg.reply):
            await msg.respond(msgspec.msgpack.encode(report()))

    subject = subjects.metrics(lattice)
    with nats_errors("subscribing to scrapes", subject):
        return await nc.subscribe(subject, cb=on_scrape)


async def gather(nc: NATS, lattice: str, *, timeout: float) -> list[MetricsReport]:
    """Every report that answers a scrape of ``lattice`` within ``timeout`` seconds (see the module)."""
    subject = subjects.metrics(lattice)
    inbox = nc.new_inbox()
    reports: list[MetricsReport] = []
    expected: set[str] = set()
    heard: set[str] = set()
    loop = asyncio.get_running_loop()
    with nats_errors("gathering metrics", subject, timeout=timeout):
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(subject, b"", reply=inbox)
            started = loop.time()
            while True:
                complete = expected <= heard
                until = started + (SETTLE if complete else timeout)
                if (remaining := until - loop.time()) <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except TimeoutError:
                    continue  # the loop ends at once, or waits on for the instances still expected
                if not msg.data:
                    if (msg.headers or {}).get("Status") == "503":
                        break  # nobody subscribes: no process answers
                    continue
                try:
                    report = _decode(msg.data)
                except msgspec.DecodeError as exc:  # one odd answer must not hide the others
                    log.warning("ignored a metrics report: %s", exc)
                    continue
                reports.append(report)
                expected.update(report.expect)
                heard.add(report.instance_id)
            missing = expected - heard
            if missing:
                log.warning("metrics: %d instance(s) did not answer within %g s", len(missing), timeout)
        finally:
            with contextlib.suppress(LatticeUnavailable), nats_errors("ending a scrape", inbox):
                await sub.unsubscribe()
    return reports
