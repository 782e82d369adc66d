"""A scrape over a real nats-server: when the gatherer stops waiting (mlcloud/lattice/scrape.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlcloud.errors import LatticeUnavailable
from mlcloud.lattice import scrape
from mlcloud.lattice.connect import connect, flush
from mlcloud.lattice.control import MetricsReport

LATTICE = "scrape-test"
# Long enough for the answers that do come to come on a loaded 2-core machine (at 0.5 s one
# sometimes missed it, and the test saw only the host's).
DEADLINE = 2.0


@pytest.fixture
async def answerers(nats_server, host_creds):
    """Connections that answer scrapes as a host or an instance: ``await answer(report)``."""
    clients = []

    async def answer(report: MetricsReport) -> None:
        client = await connect(nats_server.url, name="answerer", credentials=host_creds)
        clients.append(client)
        await scrape.answer_scrapes(client, LATTICE, lambda: report)
        await flush(client)  # nats-py's own flush() can return before the SUB is sent

    yield answer
    for client in clients:
        await client.close()


async def test_the_gather_ends_once_every_instance_a_host_named_has_answered(nc, answerers) -> None:
    await answerers(MetricsReport(host_id="N1", expect=["i1", "i2"]))
    await answerers(MetricsReport(host_id="N1", component="api", instance_id="i1"))
    await answerers(MetricsReport(host_id="N1", component="api", instance_id="i2"))
    started = time.monotonic()
    reports = await scrape.gather(nc, LATTICE, timeout=5)
    assert time.monotonic() - started < 2  # SETTLE after the last answer, not the 5 s deadline
    assert sorted(r.instance_id for r in reports) == ["", "i1", "i2"]


async def test_an_instance_that_does_not_answer_is_waited_for_until_the_deadline(nc, answerers) -> None:
    await answerers(MetricsReport(host_id="N1", expect=["i1", "gone"]))
    await answerers(MetricsReport(host_id="N1", component="api", instance_id="i1"))
    started = time.monotonic()
    reports = await scrape.gather(nc, LATTICE, timeout=DEADLINE)
    assert time.monotonic() - started >= DEADLINE
    assert sorted(r.instance_id for r in reports) == ["", "i1"]  # what came is kept


async def test_without_a_host_the_gather_waits_for_one_until_the_deadline(nc, answerers) -> None:
    """A slow host is waited for: its instances are not left out of the scrape."""
    await answerers(MetricsReport(host_id="N1", component="api", instance_id="i1"))
    started = time.monotonic()
    reports = await scrape.gather(nc, LATTICE, timeout=DEADLINE)
    assert time.monotonic() - started >= DEADLINE
    assert [r.instance_id for r in reports] == ["i1"]


async def test_a_lattice_where_nobody_answers_gives_no_reports_at_once(nc) -> None:
    started = time.monotonic()
    assert await scrape.gather(nc, LATTICE, timeout=5) == []
    assert time.monotonic() - started < 1  # NATS says nobody subscribes


async def test_a_scrape_while_nats_is_away_fails_instead_of_answering_empty(nats_server, nc) -> None:
    await nats_server.stop()
    async with asyncio.timeout(10):
        while nc.is_connected:
            await asyncio.sleep(0.05)
    with pytest.raises(LatticeUnavailable):
        await scrape.gather(nc, LATTICE, timeout=1)
