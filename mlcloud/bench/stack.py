"""The mlcloud system under test, in a process of its own, and what the bench changes in it.

``python -m mlcloud.bench.stack --state-dir DIR`` runs :func:`mlcloud.testing.stack.running_stack`
(nats-server, Bindle, registry, one host with the default app, every port free) and prints one
JSON line ``{"http_url", "nats_url", "lattice", "bindle_url"}`` once ``/v2/health/ready`` answers.
It stops cleanly when its stdin closes or on SIGTERM. Running it apart from the bench keeps the
load generator out of the measured process tree.

The bench drives it from outside, as an operator would: :func:`relink` changes the link values
between the api actor and the mlinference provider over the control interface (engine per route,
``batch_max_size`` / ``batch_max_wait_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

if TYPE_CHECKING:
    from mlcloud.lattice.control import LinkDefinition
    from mlcloud.lattice.ctl_client import CtlClient


class RouteStatus(msgspec.Struct):
    """The fields of the api's ``GET /models/{route}`` answer that the bench reads."""

    name: str
    bindle_id: str
    state: str  # a ModelInfo's state: LOADING, READY, FAILED
    engine: str = ""
    reason: str = ""


async def _serve(state_dir: Path) -> None:
    from mlcloud.testing.stack import running_stack

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    watching = False
    with contextlib.suppress(OSError, ValueError):  # stdin a file or a terminal: SIGTERM stops it
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, lambda: stop.set() if not os.read(stdin, 1024) else None)
        watching = True
    # Instances log to stderr only, as under `mlcloud up`: no log files beside (the tests' default).
    async with running_stack(state_dir, log_dir=None) as stack:
        print(json.dumps({
            "http_url": stack.http_url,
            "nats_url": stack.settings.effective_nats_url,
            "nats_creds": str(stack.settings.nats_creds),  # the stack's ctl credentials
            "lattice": stack.settings.lattice,
            "bindle_url": stack.settings.effective_bindle_url,
            "keys_dir": str(stack.settings.keys_dir),
        }), flush=True)
        await stop.wait()
    if watching:
        loop.remove_reader(sys.stdin.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.state_dir))


# --------------------------------------------------------------------------- driving it


async def mlinference_link(nats_url: str, lattice: str, nats_creds: str) -> tuple[LinkDefinition, CtlClient]:
    """The api → mlinference link, and a connected control client (close it)."""
    from mlcloud.interfaces import MLINFERENCE
    from mlcloud.lattice.ctl_client import CtlClient
    from mlcloud.settings import Settings

    ctl = await CtlClient.connect(Settings.from_env({}, nats_url=nats_url, lattice=lattice, nats_creds=nats_creds))
    links = [link for link in await ctl.get_links() if link.contract_id == MLINFERENCE]
    if not links:
        await ctl.close()
        raise RuntimeError("the default app has no link to the mlinference provider")
    return links[0], ctl


async def relink(nats_url: str, lattice: str, nats_creds: str, values: dict[str, str]) -> dict[str, str]:
    """Replace the api → mlinference link's values; return the previous ones."""
    link, ctl = await mlinference_link(nats_url, lattice, nats_creds)
    try:
        await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name, values)
    finally:
        await ctl.close()
    return dict(link.values)


async def wait_route_ready(http_url: str, route: str, bindle_id: str | None = None, engine: str | None = None,
                           timeout: float = 120.0) -> RouteStatus:
    """Poll ``GET /models/{route}`` until the route serves ``bindle_id`` on ``engine`` (each when
    given) and that model is READY; while a swap is pending the route still serves the old one."""
    async with httpx.AsyncClient(base_url=http_url) as client:
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get(f"/models/{route}")
                    if response.status_code == 200:
                        info = msgspec.json.decode(response.content, type=RouteStatus)
                        serves = (bindle_id is None or info.bindle_id == bindle_id) and \
                            (engine is None or info.engine == engine)
                        if info.state == "READY" and serves:
                            return info
                        if info.state == "FAILED" and serves:
                            raise RuntimeError(f"route {route} failed to load: {info.reason}")
                await asyncio.sleep(0.2)


if __name__ == "__main__":
    main()
