"""What a host tells an instance process it starts: the :class:`InstanceSpec`, passed as JSON in
the environment variable ``SPEC_ENV``, and the name of the health-check operation.

Host-side facts shared by the host, the supervisor and the runner; none of them needs the SDK.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mlcloud.component import ComponentKind

SPEC_ENV = "MLCLOUD_INSTANCE_SPEC"
HEALTH_OP = "Health"


class InstanceSpec(msgspec.Struct, kw_only=True, frozen=True):
    """Everything an instance process needs to know, passed by its host as JSON."""

    instance_id: str
    host_id: str
    kind: ComponentKind
    name: str
    key: str
    folder: str
    module: str
    capabilities: list[str] = []
    contract: str = ""
    link_name: str = "default"
    config: dict[str, Any] = {}
    # The instance's own NATS credentials (a .creds file's text), minted by its host, and the
    # lattice account that signed them (and every other instance's).
    nats_creds: str = ""
    account: str = ""

    @property
    def title(self) -> str:
        """The process title ``ps`` shows: which component this instance is."""
        return f"mlcloud {self.kind} {self.name} {self.instance_id[:8]}"
