"""Actor and provider definitions, and the :class:`Context` a handler receives."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mlcloud.lattice.links import DEFAULT_LINK_NAME, LinkDefinition
from mlcloud.lattice.wire import Forward
from mlcloud.settings import Settings

if TYPE_CHECKING:
    from mlcloud.host.runner import ComponentRuntime

T = TypeVar("T")


@dataclass(frozen=True)
class Operation:
    """One operation a component serves: its name, request type and handler.

    A plain-function handler runs in the event loop's thread pool so CPU-bound work (image
    decoding) overlaps; ``inline`` runs it on the event loop itself, for handlers that take well
    under a millisecond (top-k of 1000 scores), where the two thread switches of a pool hop cost
    more than the work.
    """

    name: str
    request_type: type | None
    handler: Callable[..., Any]
    inline: bool = False
    is_async: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))

    async def invoke(self, *args: Any) -> Any:
        if self.is_async:
            return await self.handler(*args)
        if self.inline:
            return self.handler(*args)
        return await asyncio.get_running_loop().run_in_executor(None, self.handler, *args)


class Context:
    """What a handler can reach: who called, the link that applies, and the lattice."""

    def __init__(self, runtime: ComponentRuntime, *, invocation_id: str, origin: str) -> None:
        self._runtime = runtime
        self.invocation_id = invocation_id
        self.origin = origin

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    @property
    def log(self) -> logging.Logger:
        return self._runtime.log

    @property
    def link(self) -> LinkDefinition | None:
        """For providers: the link between the calling actor and this provider."""
        return self._runtime.link_for(self.origin)

    async def publish_event(self, name: str, /, **data: Any) -> None:
        """Publish a lattice event (past-tense name, e.g. ``model_loaded``) as this component."""
        await self._runtime.events.publish(name, **data)

    async def call(
        self,
        contract: str,
        op: str,
        message: Any,
        result_type: type[T] | None = None,
        *,
        link_name: str = DEFAULT_LINK_NAME,
        timeout: float | None = None,
    ) -> T | Any:
        """Call the provider linked to this actor for ``contract`` (checked against the claims)."""
        return await self._runtime.call_provider(
            contract, op, message, result_type, link_name=link_name, timeout=timeout,
            invocation_id=self.invocation_id or None,
        )

    async def call_actor(
        self,
        actor: str,
        op: str,
        message: Any,
        result_type: type[T] | None = None,
        *,
        timeout: float | None = None,
        then: Forward | None = None,
    ) -> T | Any:
        """Call another actor by public key or call alias (its component name).

        With ``then`` (from :meth:`forward_to` / :meth:`forward_to_actor`, chained with
        ``Forward.followed_by``), the actor's result goes on through those calls and the last
        one's answer is returned: no intermediate result travels back through this actor.
        """
        return await self._runtime.call_actor(
            actor, op, message, result_type, timeout=timeout, invocation_id=self.invocation_id or None, forward=then
        )

    def forward_to(
        self, contract: str, op: str, fields: dict[str, Any], *, into: str, pick: str = "",
        link_name: str = DEFAULT_LINK_NAME,
    ) -> Forward:
        """A provider call to chain after :meth:`call_actor`: ``op`` with ``fields`` plus the
        previous stage's result (or its field ``pick``) as ``into``, checked against this actor's
        claims and links like :meth:`call`."""
        return self._runtime.provider_forward(contract, op, fields, into=into, pick=pick, link_name=link_name)

    def forward_to_actor(self, actor: str, op: str, fields: dict[str, Any], *, into: str, pick: str = "") -> Forward:
        """An actor call to chain after :meth:`call_actor`, like :meth:`forward_to`."""
        return self._runtime.actor_forward(actor, op, fields, into=into, pick=pick)


class Actor:
    """A stateless set of operations; instances share load through a NATS queue group."""

    def __init__(self) -> None:
        self.operations: dict[str, Operation] = {}

    def operation(
        self, name: str, request_type: type | None = None, *, inline: bool = False
    ) -> Callable[[Callable], Callable]:
        """Register ``handler`` for operation ``name`` (``inline``: see :class:`Operation`)."""

        def register(handler: Callable) -> Callable:
            self.operations[name] = Operation(name, request_type, handler, inline)
            return handler

        return register

    async def on_start(self, ctx: Context) -> None:
        """Called once the instance is connected, before it serves."""


def operation(name: str, request_type: type | None = None, *, inline: bool = False) -> Callable[[Callable], Callable]:
    """Mark a :class:`Provider` method as the handler of operation ``name``."""

    def mark(method: Callable) -> Callable:
        method.__mlcloud_operation__ = (name, request_type, inline)  # type: ignore[attr-defined]
        return method

    return mark


class Provider:
    """Base class of capability providers: long-lived state, links, operations, health.

    ``config`` is the provider's start-up configuration (from the app manifest or
    ``ctl start provider --config``); links arrive through the ``on_link_*`` hooks, first every
    existing link that names this provider, then each change.
    """

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    @functools.cached_property
    def operations(self) -> dict[str, Operation]:
        # Looked up on every invocation: found once (the operations are the class's methods).
        found = {}
        for attr in dir(type(self)):
            marker = getattr(getattr(type(self), attr), "__mlcloud_operation__", None)
            if marker:
                name, request_type, inline = marker
                found[name] = Operation(name, request_type, getattr(self, attr), inline)
        return found

    async def on_start(self, ctx: Context) -> None:
        """Open long-lived resources. ``ctx`` stays valid for calling actors."""

    async def on_link_put(self, link: LinkDefinition) -> None:
        """A link naming this provider was added or changed."""

    async def on_link_del(self, link: LinkDefinition) -> None:
        """A link naming this provider was removed."""

    async def on_stop(self) -> None:
        """Release resources; called once on shutdown."""

    async def health(self) -> dict[str, Any]:
        """Answer the host's health check: ``{"healthy": bool, "message": str, …}``."""
        return {"healthy": True, "message": ""}
