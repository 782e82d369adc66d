"""Actor and provider definitions, and the :class:`Context` a handler receives."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from mlcloud import tracing
from mlcloud.interfaces import Op
from mlcloud.lattice.control import DEFAULT_LINK_NAME, HealthReport, LinkDefinition
from mlcloud.lattice.wire import Forward
from mlcloud.sdk.chain import Chain
from mlcloud.sdk.runtime import Runtime
from mlcloud.settings import Settings

Req = TypeVar("Req")
Rep = TypeVar("Rep")
Out = TypeVar("Out")
Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """One operation a component serves: what it is (its :class:`Op`) and its handler.

    A plain-function handler runs in the event loop's thread pool so CPU-bound work (image
    decoding) overlaps; ``inline`` runs it on the event loop itself, for handlers that take well
    under a millisecond (top-k of 1000 scores), where the two thread switches of a pool hop cost
    more than the work.
    """

    op: Op[Any, Any]
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
        # In the pool thread too, log lines carry the request's id (mlcloud.tracing).
        run = functools.partial(contextvars.copy_context().run, self.handler, *args)
        return await asyncio.get_running_loop().run_in_executor(None, run)


def _check_request(op: Op[Any, Any], message: object) -> None:
    """A message that is not ``op``'s request type is a TypeError here, not a decoding error there."""
    expected = typing.get_origin(op.request) or op.request
    if isinstance(expected, type) and not isinstance(message, expected):
        raise TypeError(f"{op.name} takes a {op.request.__name__}, not a {type(message).__name__}")


class Context:
    """What a handler can reach: who called, the request it serves, the link that applies, and the lattice."""

    def __init__(self, runtime: Runtime, *, invocation_id: str, caller: str, from_host: bool = False) -> None:
        self._runtime = runtime
        self.invocation_id = invocation_id
        # The calling actor's (or host's) public key, as nats-server or the chain's grant vouches.
        self.caller = caller
        # The call comes from this instance's own host (trusted; it holds no link).
        self.from_host = from_host

    @property
    def request_id(self) -> str:
        """The id of the request this call serves: its invocation id, which every hop keeps (the
        HTTP request's ``X-Request-Id``, or its traceparent's trace id; :mod:`mlcloud.tracing`).
        A provider's lifetime context (``on_start``'s) answers for the request being served."""
        return self.invocation_id or tracing.current().request_id

    @property
    def traceparent(self) -> str:
        """The W3C traceparent of this stage (its span's when spans are exported, else its caller's)."""
        return tracing.current().traceparent

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    @property
    def log(self) -> logging.Logger:
        return self._runtime.log

    @property
    def link(self) -> LinkDefinition | None:
        """For providers: the link between the calling actor and this provider."""
        return self._runtime.link_for(self.caller)

    def link_of(self, actor_id: str) -> LinkDefinition | None:
        """For providers: the link of ``actor_id``, for a call from the host asking on its behalf."""
        return self._runtime.link_for(actor_id)

    async def publish_event(self, name: str, /, **data: Any) -> None:
        """Publish a lattice event (past-tense name, e.g. ``model_loaded``) as this component."""
        await self._runtime.publish_event(name, **data)

    async def gather_metrics(self) -> bytes:
        """The lattice's Prometheus figures, every host's and instance's, as one text exposition
        (the httpserver's ``GET /metrics``; docs/metrics.md)."""
        return await self._runtime.gather_metrics()

    async def call(
        self, contract: str, op: Op[Req, Rep], message: Req, *,
        link_name: str = DEFAULT_LINK_NAME, timeout: float | None = None,
    ) -> Rep:
        """Call the provider linked to this actor for ``contract`` (checked against the claims)."""
        _check_request(op, message)
        result: Rep = await self._runtime.call_provider(
            contract, op.name, message, op.reply, link_name=link_name, timeout=timeout,
            invocation_id=self.invocation_id or None, idempotent=op.idempotent,
        )
        return result

    @overload
    async def call_actor(self, actor: str, op: Op[Req, Rep], message: Req, *, timeout: float | None = None) -> Rep: ...

    @overload
    async def call_actor(
        self, actor: str, op: Op[Req, Any], message: Req, *, timeout: float | None = None, then: Chain[Out]
    ) -> Out: ...

    async def call_actor(
        self, actor: str, op: Op[Req, Any], message: Req, *, timeout: float | None = None,
        then: Chain[Any] | None = None,
    ) -> Any:
        """Call another actor by public key or call alias (its component name).

        With ``then`` (from :meth:`forward_to` / :meth:`forward_to_actor`, joined with
        ``Chain.followed_by``), the actor's result goes on through those calls and the last
        one's answer is returned: no intermediate result travels back through this actor.
        """
        _check_request(op, message)
        if then is None:
            return await self._runtime.call_actor(
                actor, op.name, message, op.reply, timeout=timeout, invocation_id=self.invocation_id or None,
                idempotent=op.idempotent,
            )
        chain = then.after(op)
        return await self._runtime.call_actor(
            actor, op.name, message, chain.reply, timeout=timeout,
            invocation_id=self.invocation_id or None, forward=chain.to_wire(),
            idempotent=op.idempotent and chain.idempotent,
        )

    def forward_to(
        self, contract: str, op: Op[Any, Rep], fields: Mapping[str, Any], *, into: str, pick: str = "",
        link_name: str = DEFAULT_LINK_NAME,
    ) -> Chain[Rep]:
        """A provider call to chain after :meth:`call_actor`: ``op`` with ``fields`` plus the
        previous stage's result (or its field ``pick``) as ``into``, all named as the types' Python
        attributes and checked against them (:mod:`mlcloud.sdk.chain`); routed, and checked against
        this actor's claims and links, like :meth:`call`."""
        def route(name: str, msg: dict[str, Any], wire_field: str, pick: str) -> Forward:
            return self._runtime.provider_forward(contract, name, msg, field=wire_field, pick=pick,
                                                  link_name=link_name)

        return Chain.build(op, fields, into=into, pick=pick, route=route)

    def forward_to_actor(
        self, actor: str, op: Op[Any, Rep], fields: Mapping[str, Any], *, into: str, pick: str = ""
    ) -> Chain[Rep]:
        """An actor call to chain after :meth:`call_actor`, like :meth:`forward_to`."""
        def route(name: str, msg: dict[str, Any], wire_field: str, pick: str) -> Forward:
            return self._runtime.actor_forward(actor, name, msg, field=wire_field, pick=pick)

        return Chain.build(op, fields, into=into, pick=pick, route=route)


class Actor:
    """A stateless set of operations; instances share load through a NATS queue group."""

    def __init__(self) -> None:
        self.operations: dict[str, Operation] = {}

    def operation(self, op: Op[Any, Any], *, inline: bool = False) -> Callable[[Handler], Handler]:
        """Register the decorated ``handler(ctx, request)`` for ``op`` (``inline``: see :class:`Operation`)."""

        def register(handler: Handler) -> Handler:
            self.operations[op.name] = Operation(op, handler, inline)
            return handler

        return register

    async def on_start(self, ctx: Context) -> None:
        """Called once the instance is connected, before it serves."""


def operation(op: Op[Any, Any], *, inline: bool = False) -> Callable[[Handler], Handler]:
    """Mark a :class:`Provider` method as the handler of ``op``."""

    def mark(method: Handler) -> Handler:
        method.__mlcloud_operation__ = (op, inline)  # type: ignore[attr-defined]  # a marker on a function
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
                op, inline = marker
                found[op.name] = Operation(op, getattr(self, attr), inline)
        return found

    async def on_start(self, ctx: Context) -> None:
        """Open long-lived resources. ``ctx`` stays valid for calling actors."""

    async def on_link_put(self, link: LinkDefinition) -> None:
        """A link naming this provider was added or changed."""

    async def on_link_del(self, link: LinkDefinition) -> None:
        """A link naming this provider was removed."""

    async def until_ready(self) -> None:
        """Return once the links applied so far can be served (e.g. their models are loaded).

        The runner takes calls only after it, bounded by ``ready_timeout``: the callers of an
        instance that restarts keep retrying while nobody serves (``NoResponders``), where a
        provider that took calls early would answer them "not ready yet".
        """

    async def on_stop(self) -> None:
        """Release resources; called once on shutdown."""

    async def health(self) -> HealthReport:
        """Answer the host's health check."""
        return HealthReport(healthy=True)
