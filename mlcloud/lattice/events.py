"""Lattice events: CloudEvents-shaped JSON on ``wasmbus.evt.{lattice}``.

Event names are past-tense snake_case (``actor_started``, ``health_check_failed``); the
CloudEvents ``type`` is ``com.wasmcloud.lattice.{name}`` as wasmCloud publishes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from mlcloud.lattice import subjects

log = logging.getLogger(__name__)

EVENT_TYPE_PREFIX = "com.wasmcloud.lattice."


def cloud_event(name: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": source,
        "type": EVENT_TYPE_PREFIX + name,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "datacontenttype": "application/json",
        "data": data,
    }


def event_name(event: dict[str, Any]) -> str:
    return str(event.get("type", "")).removeprefix(EVENT_TYPE_PREFIX)


class EventPublisher:
    """Publishes events as ``source`` (a host id or component key); never raises."""

    def __init__(self, nc: NATS, lattice: str, source: str) -> None:
        self.nc = nc
        self.subject = subjects.events(lattice)
        self.source = source

    async def publish(self, name: str, /, **data: Any) -> None:
        try:
            await self.nc.publish(self.subject, msgspec.json.encode(cloud_event(name, self.source, data)))
        except Exception:  # an event lost while NATS reconnects must not break the caller
            log.warning("could not publish event %s", name, exc_info=True)
