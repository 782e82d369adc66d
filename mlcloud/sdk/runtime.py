"""What the SDK needs from the process that runs a component: the :class:`Runtime` protocol.

The host's runner (:mod:`mlcloud.host.runner`) implements it over NATS; a test implements it
with canned answers, so a component's handlers run without a lattice. The SDK depends on this
protocol only, never on the runner.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from nats.js import JetStreamContext

from mlcloud.lattice.control import LinkDefinition
from mlcloud.lattice.wire import Forward
from mlcloud.settings import Settings


class Runtime(Protocol):
    """One component instance's view of the lattice. Operations are named by their wire names."""

    @property
    def settings(self) -> Settings: ...

    @property
    def log(self) -> logging.Logger: ...

    def link_for(self, actor_id: str) -> LinkDefinition | None:
        """For a provider: the link from ``actor_id`` to this instance."""

    def own_link(self, contract: str, link_name: str) -> LinkDefinition | None:
        """For an actor: its link for ``contract`` (whose values configure it)."""

    def jetstream(self) -> JetStreamContext:
        """The instance's JetStream, as far as its NATS permissions reach (mlcloud/host/permissions.py)."""

    async def publish_event(self, name: str, /, **data: Any) -> None:
        """Publish a lattice event as this component."""

    async def gather_metrics(self) -> bytes:
        """Every host's and instance's Prometheus figures, merged into one text exposition."""

    async def call_provider(
        self, contract: str, op: str, message: Any, result_type: Any, *,
        link_name: str, timeout: float | None, invocation_id: str | None, idempotent: bool = False,
    ) -> Any:
        """Call the provider linked to this actor for ``contract``; the reply as ``result_type``.

        ``idempotent``: the operation may be made again after its server died (``Op.idempotent``)."""

    async def call_actor(
        self, actor: str, op: str, message: Any, result_type: Any, *,
        timeout: float | None, invocation_id: str | None, forward: Forward | None = None,
        idempotent: bool = False,
    ) -> Any:
        """Call an actor by key or call alias; with ``forward``, the answer of the chain's last stage.

        ``idempotent``: the call and every stage of the chain may be made again (``Op.idempotent``)."""

    def provider_forward(
        self, contract: str, op: str, msg: dict[str, Any], *, field: str, pick: str, link_name: str
    ) -> Forward:
        """A chain stage calling this actor's linked provider for ``contract``."""

    def actor_forward(self, actor: str, op: str, msg: dict[str, Any], *, field: str, pick: str) -> Forward:
        """A chain stage calling another actor."""
