"""Lattice events: CloudEvents-shaped JSON on ``wasmbus.evt.{lattice}``.

Event names are past-tense snake_case (``actor_started``, ``health_check_failed``); the
CloudEvents ``type`` is ``com.wasmcloud.lattice.{name}`` as wasmCloud publishes them. Each
name's ``data`` is the struct :data:`mlcloud.lattice.control.EVENT_TYPES` gives for it, checked
when the event is published and when it is read.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from mlcloud.errors import LatticeError, MalformedMessage
from mlcloud.lattice import subjects
from mlcloud.lattice.control import EVENT_TYPES, EventData, EventName
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

EVENT_TYPE_PREFIX = "com.wasmcloud.lattice."

T = TypeVar("T")


class CloudEvent(msgspec.Struct, Generic[T], kw_only=True):
    id: str
    source: str  # the host id or component key that published it
    type: str
    time: str  # ISO 8601
    data: T
    specversion: str = "1.0"
    datacontenttype: str = "application/json"

    @property
    def name(self) -> str:
        return self.type.removeprefix(EVENT_TYPE_PREFIX)

    @property
    def timestamp(self) -> float | None:
        """``time`` as epoch seconds, or None when it is not ISO 8601."""
        try:
            return dt.datetime.fromisoformat(self.time).timestamp()
        except ValueError:
            return None


Event = CloudEvent[EventData]


def cloud_event(name: EventName, source: str, data: EventData) -> Event:
    if not isinstance(data, EVENT_TYPES[name]):
        raise TypeError(f"event {name} carries a {EVENT_TYPES[name].__name__}, not a {type(data).__name__}")
    return CloudEvent(
        id=uuid.uuid4().hex,
        source=source,
        type=EVENT_TYPE_PREFIX + name,
        time=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        data=data,
    )


def decode_event(raw: bytes) -> Event:
    """An event as published on the lattice, its ``data`` decoded into the type of its name."""
    try:
        envelope = msgspec.json.decode(raw, type=CloudEvent[msgspec.Raw])
        try:
            name = EventName(envelope.name)
        except ValueError:
            raise MalformedMessage(f"unknown event type {envelope.type!r}") from None
        data = msgspec.json.decode(envelope.data, type=EVENT_TYPES[name])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"malformed lattice event: {exc}") from exc
    return CloudEvent(id=envelope.id, source=envelope.source, type=envelope.type, time=envelope.time, data=data,
                      specversion=envelope.specversion, datacontenttype=envelope.datacontenttype)


class EventPublisher:
    """Publishes events as ``source`` (a host id or component key).

    NATS trouble never reaches the caller (an event lost while NATS reconnects must not break
    it); a payload of the wrong type does, as the bug it is.
    """

    def __init__(self, nc: NATS, lattice: str, source: str) -> None:
        self.nc = nc
        self.subject = subjects.events(lattice)
        self.source = source

    async def publish(self, name: EventName | str, data: EventData | None = None, /, **fields: Any) -> None:
        """Publish ``data``, or ``fields`` made into the payload type of ``name`` (as components do)."""
        event_name = EventName(name)
        payload = data if data is not None else EVENT_TYPES[event_name](**fields)
        encoded = msgspec.json.encode(cloud_event(event_name, self.source, payload))
        try:
            with nats_errors(f"event {event_name}", self.subject):
                await self.nc.publish(self.subject, encoded)
        except LatticeError as err:
            log.warning("could not publish event %s: %s", event_name, err.message)
