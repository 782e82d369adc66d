"""Gathering every process's Prometheus figures over the lattice: one request, many answers.

A scrape is a NATS request on ``wasmbus.metrics.{lattice}`` that every host and every instance
subscribes to (no queue group), each answering with its own :class:`MetricsReport` (msgpack).
The gatherer, the httpserver for ``GET /metrics``, takes answers until a host has answered, every
instance the hosts named (``MetricsReport.expect``) has answered and ``SETTLE`` seconds have
passed (time for other hosts to answer), or until its deadline. No figure travels on the request path: a scrape costs
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
from mlcloud.lattice.connect import while_connected
from mlcloud.lattice.control import MetricsReport
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

SETTLE = 0.25  # seconds every scrape waits for hosts it has not heard from yet

_decode = msgspec.msgpack.Decoder(MetricsReport).decode


class Answering:
    """A process answering scrapes, until :meth:`stop`."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    async def stop(self) -> None:
        # A connection that closed under us took its subscription with it.
        with contextlib.suppress(LatticeUnavailable), nats_errors("ending scrapes", self._sub.subject):
            await self._sub.unsubscribe()


async def answer_scrapes(nc: NATS, lattice: str, report: Callable[[], MetricsReport]) -> Answering:
    """Answer every scrape of ``lattice`` with ``report()`` until stopped."""
    async def on_scrape(msg: Msg) -> None:
        if not msg.reply:
            return
        with contextlib.suppress(LatticeUnavailable), nats_errors("a metrics report", msg.reply):
            await msg.respond(msgspec.msgpack.encode(report()))

    subject = subjects.metrics(lattice)
    with nats_errors("subscribing to scrapes", subject):
        return Answering(await nc.subscribe(subject, cb=on_scrape))


async def gather(nc: NATS, lattice: str, *, timeout: float) -> list[MetricsReport]:
    """Every report that answers a scrape of ``lattice`` within ``timeout`` seconds (see the module).

    While NATS is away: :class:`LatticeUnavailable` at once (a failed scrape, 503), not an empty
    answer that would make every series look gone."""
    subject = subjects.metrics(lattice)
    async with while_connected(nc, "gathering metrics"):
        with nats_errors("gathering metrics", subject, timeout=timeout):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            try:
                await nc.publish(subject, b"", reply=inbox)
                return await _answers(sub, timeout)
            finally:
                with contextlib.suppress(LatticeUnavailable), nats_errors("ending a scrape", inbox):
                    await sub.unsubscribe()


async def _answers(sub: Subscription, timeout: float) -> list[MetricsReport]:
    reports: list[MetricsReport] = []
    expected: set[str] = set()  # the instances the hosts that answered named
    heard: set[str] = set()  # instance ids; "" for a host
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        complete = "" in heard and expected <= heard
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
    if missing := expected - heard:
        log.warning("metrics: %d instance(s) did not answer within %g s", len(missing), timeout)
    return reports
