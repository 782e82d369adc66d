"""The instance process as `ps` sees it: each one names its component (mlcloud/host/runner.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlcloud.host.host import Host
from mlcloud.lattice import subjects
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.rpc import RpcClient
from mlcloud.settings import Settings
from tests.conftest import COMPONENTS, host_connection


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


async def test_ps_names_each_instances_component(settings: Settings) -> None:
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        nc = await host_connection(settings)
        try:
            provider = (await ctl.start_provider(host.id, str(COMPONENTS / "echo"))).provider_id
            actor = (await ctl.start_actor(host.id, str(COMPONENTS / "caller"))).actor_id
            await ctl.put_link(actor, provider, "test:echo")
            rpc = RpcClient(nc, caller="test", timeout=2)
            subject = subjects.actor_target(settings.lattice, actor)
            for attempt in range(50):  # until the link has reached both instances
                try:
                    answer = await rpc.call(subject, "Caller.Relay", {})
                    break
                except Exception:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
            actor_title, provider_title = cmdline(answer["actor_pid"]), cmdline(answer["provider"]["pid"])
        finally:
            await nc.close()
            await ctl.close()
    assert actor_title.startswith("mlcloud actor caller ") and "mlcloud.host.runner" not in actor_title
    assert provider_title.startswith("mlcloud provider echo ")
    assert actor_title.split()[-1] != provider_title.split()[-1]  # the instance ids
