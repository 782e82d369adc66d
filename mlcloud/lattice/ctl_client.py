"""The control interface's client: what the CLI, the app deployer, the washboard and tests use.

Requests and replies are the structs of :mod:`mlcloud.lattice.control`; a refused request raises
the :mod:`mlcloud.errors` class the host raised, and NATS trouble the one
:mod:`mlcloud.lattice.natserrors` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from mlcloud.errors import LatticeUnavailable, MalformedMessage, MLCloudError
from mlcloud.interfaces import RepositoryModel
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import credentials_for
from mlcloud.lattice.connect import connect, while_connected
from mlcloud.lattice.control import (
    DEFAULT_LINK_NAME,
    ActorReply,
    CtlReply,
    Empty,
    HostInfo,
    HostInventory,
    LinkDefinition,
    LinkId,
    LinkList,
    LinkModels,
    LinkPutReply,
    ModelList,
    ProviderReply,
    RepositoryCommand,
    RepositoryReply,
    ScaleActor,
    StartActor,
    StartProvider,
    StopActor,
    StopProvider,
)
from mlcloud.lattice.natserrors import nats_errors
from mlcloud.settings import Settings

R = TypeVar("R")
log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 120.0  # starting components waits until they are ready, which can take a while
PING_WAIT = 1.0  # the longest a ping waits for hosts to answer


def decode_reply(data: bytes, reply_type: type[R], subject: str) -> R:
    """A control reply's response; a refused request raises the error the host reported."""
    try:
        # mypy cannot see a generic struct subscripted with a runtime type; msgspec can.
        reply = msgspec.json.decode(data, type=CtlReply[reply_type])  # type: ignore[valid-type]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"malformed control reply on {subject}: {exc}") from exc
    result: R = reply.result()
    return result


async def ctl_request(nc: NATS, subject: str, body: msgspec.Struct, reply_type: type[R], *, timeout: float) -> R:
    """One control request, one reply; while NATS is away it fails at once (:func:`while_connected`)."""
    with nats_errors("the control request", subject, timeout=timeout):
        async with while_connected(nc, f"the control request on {subject}"):
            msg = await nc.request(subject, msgspec.json.encode(body), timeout=timeout)
    return decode_reply(msg.data, reply_type, subject)


class CtlClient:
    def __init__(self, nc: NATS, lattice: str, *, timeout: float) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout

    @classmethod
    async def connect(cls, settings: Settings) -> CtlClient:
        nc = await connect(settings.effective_nats_url, name="mlcloud-ctl", credentials=credentials_for(settings),
                           reconnect=False, timeout=3.0)
        return cls(nc, settings.lattice, timeout=settings.ctl_timeout)

    async def close(self) -> None:
        with nats_errors("closing the control connection"):
            await self.nc.close()

    async def __aenter__(self) -> CtlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get_hosts(self, *, wait: float | None = None) -> list[HostInfo]:
        """Every host that answers a ping within ``wait`` seconds; an empty lattice answers ``[]``.

        With no host subscribed, NATS sends a body-less "no responders" status to the inbox,
        which ends the wait at once.
        """
        subject = subjects.ctl_ping_hosts(self.lattice)
        wait = wait if wait is not None else min(self.timeout, PING_WAIT)
        inbox = self.nc.new_inbox()
        hosts: list[HostInfo] = []
        loop = asyncio.get_running_loop()
        with nats_errors("pinging hosts", subject, timeout=wait):
            sub = await self.nc.subscribe(inbox)
            try:
                await self.nc.publish(subject, msgspec.json.encode(Empty()), reply=inbox)
                deadline = loop.time() + wait
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        msg = await sub.next_msg(timeout=remaining)
                    except TimeoutError:
                        break
                    if not msg.data:
                        if (msg.headers or {}).get("Status") == "503":
                            break
                        continue
                    try:
                        hosts.append(decode_reply(msg.data, HostInfo, subject))
                    except MLCloudError as err:  # one odd host must not hide the others
                        log.warning("ignored a reply on %s: %s", subject, err.message)
            finally:
                # A connection closed under us took the subscription with it.
                with contextlib.suppress(LatticeUnavailable), nats_errors("ending the ping", inbox):
                    await sub.unsubscribe()
        return sorted(hosts, key=lambda h: h.id)

    async def get_inventory(self, host_id: str) -> HostInventory:
        return await self._request(subjects.ctl_inventory(self.lattice, host_id), Empty(), HostInventory)

    async def get_inventories(self) -> list[HostInventory]:
        hosts = await self.get_hosts()
        return list(await asyncio.gather(*(self.get_inventory(h.id) for h in hosts)))

    async def start_actor(self, host_id: str, actor_ref: str, count: int = 1) -> ActorReply:
        return await self._command(host_id, "la", StartActor(actor_ref=actor_ref, count=count), ActorReply)

    async def scale_actor(self, host_id: str, actor: str, count: int, actor_ref: str = "") -> ActorReply:
        return await self._command(host_id, "scale", ScaleActor(actor_id=actor, count=count, actor_ref=actor_ref),
                                   ActorReply)

    async def stop_actor(self, host_id: str, actor: str) -> ActorReply:
        return await self._command(host_id, "sa", StopActor(actor_id=actor), ActorReply)

    async def start_provider(
        self, host_id: str, provider_ref: str, link_name: str = DEFAULT_LINK_NAME, config: dict[str, Any] | None = None
    ) -> ProviderReply:
        body = StartProvider(provider_ref=provider_ref, link_name=link_name, config=config or {})
        return await self._command(host_id, "lp", body, ProviderReply)

    async def stop_provider(self, host_id: str, provider: str, link_name: str = DEFAULT_LINK_NAME) -> ProviderReply:
        return await self._command(host_id, "sp", StopProvider(provider_id=provider, link_name=link_name),
                                   ProviderReply)

    async def stop_host(self, host_id: str) -> None:
        await self._command(host_id, "stop", Empty(), Empty)

    async def put_link(
        self, actor_id: str, provider_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME,
        values: dict[str, str] | None = None,
    ) -> LinkPutReply:
        link = LinkDefinition(actor_id=actor_id, provider_id=provider_id, contract_id=contract_id,
                              link_name=link_name, values=values or {})
        return await self._request(subjects.ctl_links(self.lattice, "put"), link, LinkPutReply)

    async def delete_link(self, actor_id: str, contract_id: str, link_name: str = DEFAULT_LINK_NAME) -> None:
        body = LinkId(actor_id=actor_id, contract_id=contract_id, link_name=link_name)
        await self._request(subjects.ctl_links(self.lattice, "del"), body, Empty)

    async def get_models(self, host_id: str) -> list[LinkModels]:
        """The models of every mlinference link to a provider on ``host_id``."""
        return (await self._request(subjects.ctl_models(self.lattice, host_id), Empty(), ModelList)).links

    async def model_repository(self, host_id: str, command: RepositoryCommand) -> list[RepositoryModel]:
        """A model repository operation on an mlinference link whose provider runs on ``host_id``."""
        return (await self._command(host_id, "repo", command, RepositoryReply)).models

    async def get_links(self) -> list[LinkDefinition]:
        return (await self._request(subjects.ctl_links(self.lattice, "get"), Empty(), LinkList)).links

    async def _request(self, subject: str, body: msgspec.Struct, reply_type: type[R], *,
                       timeout: float | None = None) -> R:
        return await ctl_request(self.nc, subject, body, reply_type, timeout=timeout or self.timeout)

    async def _command(self, host_id: str, command: str, body: msgspec.Struct, reply_type: type[R]) -> R:
        subject = subjects.ctl_command(self.lattice, host_id, command)
        return await self._request(subject, body, reply_type, timeout=max(self.timeout, COMMAND_TIMEOUT))


__all__ = ["CtlClient", "Empty", "ctl_request"]
