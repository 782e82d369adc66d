"""The control interface's client: what the CLI, the app deployer, the washboard and tests use."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from mlcloud.errors import MLCloudError, NoResponders, RpcTimeout, error_from_wire
from mlcloud.lattice import subjects
from mlcloud.lattice.connect import connect
from mlcloud.lattice.links import DEFAULT_LINK_NAME
from mlcloud.settings import Settings


class CtlClient:
    def __init__(self, nc: NATS, lattice: str, *, timeout: float) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout

    @classmethod
    async def connect(cls, settings: Settings) -> CtlClient:
        nc = await connect(settings.effective_nats_url, name="mlcloud-ctl", reconnect=False, timeout=3.0)
        return cls(nc, settings.lattice, timeout=settings.ctl_timeout)

    async def close(self) -> None:
        await self.nc.close()

    async def __aenter__(self) -> CtlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(self, subject: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """One request, one reply; a refused command raises the error the host reported."""
        try:
            msg = await self.nc.request(subject, msgspec.json.encode(body or {}), timeout=timeout or self.timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"no host answers {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RpcTimeout(f"no answer on {subject} within {timeout or self.timeout:g} s") from exc
        reply = msgspec.json.decode(msg.data)
        if not reply.get("accepted", True):
            raise error_from_wire({"kind": reply.get("kind"), "message": reply.get("error")})
        return reply

    async def get_hosts(self, *, wait: float | None = None) -> list[dict[str, Any]]:
        """Every host that answers a ping within ``wait`` seconds."""
        inbox = self.nc.new_inbox()
        replies: list[dict[str, Any]] = []
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(subjects.ctl_ping_hosts(self.lattice), b"{}", reply=inbox)
            deadline = asyncio.get_running_loop().time() + (wait if wait is not None else min(self.timeout, 1.0))
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except nats.errors.TimeoutError:
                    break
                if msg.data:  # an empty message is NATS saying "no responders"
                    replies.append(msgspec.json.decode(msg.data))
        finally:
            await sub.unsubscribe()
        return sorted(replies, key=lambda h: h["id"])

    async def get_inventory(self, host_id: str) -> dict[str, Any]:
        return await self.request(subjects.ctl_inventory(self.lattice, host_id))

    async def get_inventories(self) -> list[dict[str, Any]]:
        hosts = await self.get_hosts()
        return list(await asyncio.gather(*(self.get_inventory(h["id"]) for h in hosts)))

    async def start_actor(self, host_id: str, actor_ref: str, count: int = 1) -> dict[str, Any]:
        return await self._command(host_id, "la", {"actor_ref": actor_ref, "count": count})

    async def scale_actor(self, host_id: str, actor: str, count: int, actor_ref: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"actor_id": actor, "count": count}
        if actor_ref:
            body["actor_ref"] = actor_ref
        return await self._command(host_id, "scale", body)

    async def stop_actor(self, host_id: str, actor: str) -> dict[str, Any]:
        return await self._command(host_id, "sa", {"actor_id": actor})

    async def start_provider(
        self, host_id: str, provider_ref: str, link_name: str = DEFAULT_LINK_NAME, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self._command(host_id, "lp", {"provider_ref": provider_ref, "link_name": link_name, "config": config or {}})

    async def stop_provider(self, host_id: str, provider: str, link_name: str = DEFAULT_LINK_NAME) -> dict[str, Any]:
        return await self._command(host_id, "sp", {"provider_id": provider, "link_name": link_name})

    async def stop_host(self, host_id: str) -> dict[str, Any]:
        return await self._command(host_id, "stop", {})

    async def put_link(
        self, actor_id: str, provider_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME,
        values: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {"actor_id": actor_id, "provider_id": provider_id, "contract_id": contract_id,
                "link_name": link_name, "values": values or {}}
        return await self.request(subjects.ctl_links(self.lattice, "put"), body)

    async def delete_link(self, actor_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME) -> dict[str, Any]:
        body = {"actor_id": actor_id, "contract_id": contract_id, "link_name": link_name}
        return await self.request(subjects.ctl_links(self.lattice, "del"), body)

    async def get_links(self) -> list[dict[str, Any]]:
        return (await self.request(subjects.ctl_links(self.lattice, "get")))["links"]

    async def _command(self, host_id: str, command: str, body: dict[str, Any]) -> dict[str, Any]:
        # Starting components waits for them to be ready, which can take a while.
        return await self.request(subjects.ctl_command(self.lattice, host_id, command), body, timeout=max(self.timeout, 120))


__all__ = ["CtlClient", "MLCloudError"]
