"""What nats-server lets an instance do, whatever its own code tries (mlcloud/host/permissions.py).

The rogue actor claims no capability and connects with nats-py itself, with its own instance
credentials; the caller actor claims ``test:echo`` and is linked to the echo provider.
"""

from __future__ import annotations

import asyncio

import pytest

from mlcloud.errors import LinkNotFound, NoResponders
from mlcloud.host.host import Host
from mlcloud.lattice import subjects
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.rpc import RpcClient
from mlcloud.settings import Settings
from tests.conftest import COMPONENTS, host_connection


async def call_until_ready(rpc: RpcClient, target: str, op: str, message: object) -> dict:
    for _ in range(100):
        try:
            answer: dict = await rpc.call(target, op, message)
            return answer
        except NoResponders:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{target} never answered")


async def test_a_rogue_component_using_nats_directly_is_stopped_by_the_server(settings: Settings) -> None:
    lattice = settings.lattice
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        nc = await host_connection(settings)
        try:
            echo = (await ctl.start_provider(host.id, str(COMPONENTS / "echo"))).provider_id
            caller = (await ctl.start_actor(host.id, str(COMPONENTS / "caller"))).actor_id
            rogue = (await ctl.start_actor(host.id, str(COMPONENTS / "rogue"))).actor_id
            await ctl.put_link(caller, echo, "test:echo")
            echo_target = subjects.provider_target(lattice, "test:echo", echo, "default")
            attempts = {
                "publish": [
                    subjects.call(echo_target, rogue),  # a provider it has no claim for
                    subjects.call(echo_target, caller),  # … posing as an actor that has one
                    subjects.call(subjects.actor_target(lattice, "caller"), caller),  # calling as another
                    subjects.ctl_command(lattice, host.id, "stop"),  # control commands
                    subjects.ctl_links(lattice, "put"),
                    subjects.metrics(lattice),  # scrapes: only an httpserver sends them
                ],
                "subscribe": [
                    subjects.served(subjects.actor_target(lattice, caller))[0],  # another actor's calls
                    subjects.events(lattice),
                    "_INBOX.>",  # everyone's replies
                ],
            }
            rpc = RpcClient(nc, caller="test", timeout=10)
            report = await call_until_ready(rpc, subjects.actor_target(lattice, "rogue"), "Rogue.Try", attempts)
            # Past the server (a connection that may call as anyone), the provider checks the link.
            with pytest.raises(LinkNotFound, match=f"{rogue} has no link to echo"):
                await RpcClient(nc, caller=rogue, timeout=2).call(echo_target, "Echo.Say", {})
        finally:
            await nc.close()
            await ctl.close()
    errors = " | ".join(report["errors"])  # nats-py lower-cases the server's error lines
    for subject in attempts["publish"]:
        assert f'permissions violation for publish to "{subject.lower()}"' in errors, subject
    for subject in attempts["subscribe"]:
        assert f'permissions violation for subscription to "{subject.lower()}"' in errors, subject
