"""A SIGKILLed httpserver instance refuses no connection: its host holds the listening socket.

Real processes: a host, the httpserver and the echo actor, a client loop of fresh connections,
and SIGKILL. Connections made while no instance accepts wait in the host's socket backlog and
are answered by the restarted instance (mlcloud.listeners).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import httpx

from mlcloud.host.host import Host
from mlcloud.interfaces import HTTPSERVER
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.servers import free_port
from tests.providers.test_httpserver import ECHO_ACTOR, HTTPSERVER_DIR, wait_listening

CONCURRENCY = 8


async def test_a_killed_httpserver_refuses_no_connection_and_serves_again(settings):
    address = f"127.0.0.1:{free_port()}"
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        provider = (await ctl.start_provider(host.id, HTTPSERVER_DIR)).provider_id
        actor = (await ctl.start_actor(host.id, ECHO_ACTOR)).actor_id
        await ctl.put_link(actor, provider, HTTPSERVER, values={"address": address})
        await (await wait_listening(f"http://{address}")).aclose()

        refused = failed = 0
        successes: list[float] = []
        stop = asyncio.Event()

        async def client_loop() -> None:
            nonlocal refused, failed
            # A new connection per request, as a load balancer's health checks or a fresh client.
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=20, limits=limits) as client:
                while not stop.is_set():
                    try:
                        response = await client.put("/x", content=b"hello")
                    except httpx.ConnectError:
                        refused += 1
                    except httpx.TransportError:
                        failed += 1  # in flight at the kill
                    else:
                        assert response.status_code == 201
                        successes.append(time.monotonic())

        loops = [asyncio.create_task(client_loop()) for _ in range(CONCURRENCY)]
        await asyncio.sleep(1.0)
        pid = (await ctl.get_inventory(host.id)).providers[0].instances[0].pid
        assert pid is not None
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(6.0)
        stop.set()
        await asyncio.gather(*loops)
        await ctl.close()

        assert successes[-1] > killed + 1, "serving again after the kill"
        # The longest time without a success, from the kill until serving again.
        gap = max(later - earlier for earlier, later in itertools.pairwise(sorted([killed, *successes]))
                  if later > killed)
        figures = f"refused {refused}, failed {failed}, {gap:.2f} s without a success"
        assert refused == 0, figures
        assert failed <= CONCURRENCY, figures  # at most the requests in flight at the kill
        # The host waits restart_backoff, then a new Python process connects to NATS and
        # reads its links; 1 s on an idle machine, with room for a loaded CI runner.
        assert gap < 3.0, figures


async def test_a_put_in_flight_when_its_actor_dies_is_made_again_and_a_post_is_not(settings):
    """HandleRequest is retried for the methods RFC 9110 calls idempotent, never for POST."""
    address = f"127.0.0.1:{free_port()}"
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        provider = (await ctl.start_provider(host.id, HTTPSERVER_DIR)).provider_id
        actor = (await ctl.start_actor(host.id, ECHO_ACTOR)).actor_id
        # Room for the restart and the second run of the 2 s request.
        await ctl.put_link(actor, provider, HTTPSERVER, values={"address": address, "timeout": "30"})
        client = await wait_listening(f"http://{address}")
        put = asyncio.create_task(client.put("/slow", content=b"again", timeout=30))
        post = asyncio.create_task(client.post("/slow", content=b"once", timeout=30))
        await asyncio.sleep(1.0)  # both are in the actor's 2 s sleep
        pid = (await ctl.get_inventory(host.id)).actors[0].instances[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        put_response, post_response = await asyncio.gather(put, post)
        await client.aclose()
        await ctl.close()
    assert put_response.status_code == 201 and put_response.json()["method"] == "PUT"
    assert post_response.status_code == 503
    assert post_response.json()["error"]["kind"] == "InstanceDied"
