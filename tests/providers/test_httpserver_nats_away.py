"""The httpserver provider while NATS is away: its listener (a child process of the host) stays up,
so each request must get a prompt 503 with Retry-After, not a 504 at the deadline; once NATS is
back on its port the same listener serves again."""

from __future__ import annotations

import asyncio
import time

from mlcloud.lattice.nats_server import NatsServer
from tests.providers.test_httpserver import echo_behind_httpserver, wait_listening

FAIL_FAST = 1.0  # seconds: the most a request may take to fail while NATS is away
DEADLINE = "8"  # the link's timeout for the actor, far above FAIL_FAST


async def test_requests_fail_fast_while_nats_is_away_and_are_served_again_after(
    nats_server: NatsServer, settings,
) -> None:
    async with echo_behind_httpserver(settings) as link:
        client = await wait_listening(f"http://{await link(timeout=DEADLINE)}")
        assert (await client.get("/before")).status_code == 201

        # The echo actor takes 2 s over /slow: the request is in flight when NATS stops.
        in_flight = asyncio.create_task(client.get("/slow"))
        await asyncio.sleep(0.5)
        stopping = time.perf_counter()
        await nats_server.stop()
        response = await in_flight
        waited = time.perf_counter() - stopping
        assert response.status_code == 503 and response.json()["error"]["kind"] == "LatticeUnavailable"
        print(f"\nin flight when NATS stopped: 503 {waited * 1000:.0f} ms after the stop began")
        assert waited < FAIL_FAST

        # Each request made while NATS is away: the host and its instances saw the connection
        # drop at once (a local server's socket closes).
        times = []
        for _ in range(5):
            started = time.perf_counter()
            response = await client.get("/while-away")
            times.append(time.perf_counter() - started)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.json()["error"]["kind"] == "LatticeUnavailable"
        print(f"while NATS is away: 503 in {', '.join(f'{t * 1000:.1f}' for t in times)} ms")
        assert max(times) < FAIL_FAST

        await nats_server.start()  # the same port and data dir
        restarted = time.perf_counter()
        async with asyncio.timeout(15):
            while (await client.get("/after")).status_code != 201:
                await asyncio.sleep(0.05)
        print(f"served again {time.perf_counter() - restarted:.2f} s after NATS restarted")
        await client.aclose()
