"""What the washboard knows about the lattice: one aggregate fed by events, polls and model status.

:class:`LatticeState` does no I/O. The watcher feeds it host pings, inventories, links, model
status replies and lattice events; the web app reads *views* of it (JSON-ready lists, one per
:class:`Section`) and the feed of recent events. Every change marks its section dirty, so the
page is sent only the sections that changed.

Events and polls race: an inventory requested just before an instance died can arrive just after
the ``health_check_failed`` event. Each instance keeps the newest of the two by ``status_since``
(both stamped by the host's clock), so a late poll never rolls a status back.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mlcloud.lattice.events import event_name
from mlcloud.washboard.masking import mask_event_data, mask_values

FEED_SIZE = 200
# A host that stops answering pings is shown as missing, then forgotten after this long.
HOST_FORGET_AFTER = 60.0
STATUS_ORDER = ("unhealthy", "awaiting", "healthy", "stopped")

INSTANCE_EVENTS = {
    "actor_started", "provider_started", "actor_stopped", "provider_stopped", "actor_restarted",
    "provider_restarted", "health_check_passed", "health_check_failed",
}


class Section(enum.StrEnum):
    STATUS = "status"
    HOSTS = "hosts"
    ACTORS = "actors"
    PROVIDERS = "providers"
    LINKS = "links"
    MODELS = "models"


class Refresh(enum.Flag):
    """What an event tells the watcher to fetch again soon."""

    NONE = 0
    INVENTORY = enum.auto()
    LINKS = enum.auto()
    MODELS = enum.auto()


@dataclass
class HostRecord:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    started_at: float | None = None
    last_heartbeat: float | None = None
    last_seen: float = 0.0
    missing_since: float | None = None

    def view(self, inventory: dict[str, Any] | None) -> dict[str, Any]:
        actors = (inventory or {}).get("actors", [])
        providers = (inventory or {}).get("providers", [])
        return {
            "id": self.id,
            "labels": dict(self.labels),
            "version": self.version,
            "started_at": self.started_at,
            "last_heartbeat": self.last_heartbeat,
            "status": "missing" if self.missing_since is not None else "up",
            "missing_since": self.missing_since,
            "actors": len(actors),
            "actor_instances": sum(len(a.get("instances", [])) for a in actors),
            "providers": len(providers),
        }


@dataclass
class ModelsRecord:
    """The last Status answer of one mlinference link, and whether the last call failed."""

    actor_id: str
    link_name: str
    provider_id: str
    models: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    updated_at: float = 0.0


ProviderKey = tuple[str, str, str]  # host id, provider key, link name


def parse_time(value: Any, default: float) -> float:
    """CloudEvents ``time`` (ISO 8601) → epoch seconds."""
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return default


def worst_status(statuses: Iterable[str]) -> str:
    present = set(statuses)
    for status in STATUS_ORDER:
        if status in present:
            return status
    return "stopped"


class LatticeState:
    def __init__(self, lattice: str, nats_url: str, *, clock: Callable[[], float] = time.time,
                 feed_size: int = FEED_SIZE, host_forget_after: float = HOST_FORGET_AFTER) -> None:
        self.lattice = lattice
        self.nats_url = nats_url
        self.clock = clock
        self.host_forget_after = host_forget_after
        self.connected = False
        self.error = ""
        self.last_update: float | None = None  # last complete control-interface poll
        self.hosts: dict[str, HostRecord] = {}
        self.inventories: dict[str, dict[str, Any]] = {}
        self.links: list[dict[str, Any]] = []
        self.models: dict[tuple[str, str], ModelsRecord] = {}
        # Providers seen running and gone since: shown as stopped so the page can start them again.
        self.stopped_providers: dict[ProviderKey, dict[str, Any]] = {}
        # What a provider was started with (ref, link name, config), to start it again.
        self.provider_launch: dict[ProviderKey, dict[str, Any]] = {}
        self.feed: deque[dict[str, Any]] = deque(maxlen=feed_size)
        self.feed_seq = 0
        self._dirty: set[Section] = set(Section)

    # ---- change tracking ---------------------------------------------------------------

    def touch(self, *sections: Section) -> None:
        self._dirty.update(sections)

    def take_dirty(self) -> set[Section]:
        dirty, self._dirty = self._dirty, set()
        return dirty

    # ---- inputs ------------------------------------------------------------------------

    def set_connection(self, connected: bool, error: str = "") -> None:
        if (connected, error) != (self.connected, self.error):
            self.connected, self.error = connected, error
            self.touch(Section.STATUS)

    def mark_polled(self) -> None:
        self.last_update = self.clock()
        self.touch(Section.STATUS)

    def apply_hosts(self, pings: list[dict[str, Any]]) -> None:
        """One round of host pings: who answered is up, who did not is missing, then forgotten."""
        now = self.clock()
        answered = set()
        for ping in pings:
            host = self._host(ping["id"])
            answered.add(host.id)
            self._update_host(host, ping, now)
        for host in list(self.hosts.values()):
            if host.id in answered:
                continue
            if host.missing_since is None:
                host.missing_since = now
                self.touch(Section.HOSTS)
            elif now - host.last_seen > self.host_forget_after:
                self.forget_host(host.id)

    def apply_inventory(self, inventory: dict[str, Any]) -> None:
        host_id = inventory["host_id"]
        now = self.clock()
        host = self._host(host_id)
        self._update_host(host, inventory, now)
        previous = self.inventories.get(host_id)
        inventory = self._merge_newer_statuses(previous, inventory)
        self._track_providers(host_id, previous, inventory, now)
        if inventory != previous:
            self.inventories[host_id] = inventory
            self.touch(Section.HOSTS, Section.ACTORS, Section.PROVIDERS, Section.LINKS, Section.MODELS)

    def forget_host(self, host_id: str) -> None:
        self.hosts.pop(host_id, None)
        self.inventories.pop(host_id, None)
        for key in [k for k in self.stopped_providers if k[0] == host_id]:
            del self.stopped_providers[key]
        self.touch(Section.HOSTS, Section.ACTORS, Section.PROVIDERS, Section.LINKS, Section.MODELS)

    def apply_links(self, links: list[dict[str, Any]]) -> None:
        ordered = sorted(links, key=lambda l: (l["actor_id"], l["contract_id"], l.get("link_name", "")))
        if ordered != self.links:
            self.links = ordered
            known = {(l["actor_id"], l.get("link_name", "default")) for l in ordered}
            for key in [k for k in self.models if k not in known]:
                del self.models[key]
            self.touch(Section.LINKS, Section.MODELS)

    def apply_models(self, actor_id: str, link_name: str, provider_id: str,
                     models: list[dict[str, Any]] | None, error: str = "") -> None:
        """A Status reply (``models``) or the reason the call failed (``error``)."""
        key = (actor_id, link_name)
        is_new = key not in self.models
        record = self.models.get(key) or ModelsRecord(actor_id, link_name, provider_id)
        before = (record.provider_id, list(record.models), record.error)
        record.provider_id = provider_id
        record.error = error
        if models is not None:
            record.models = sorted(models, key=lambda m: m.get("name", ""))
            record.updated_at = self.clock()
        self.models[key] = record
        if is_new or (record.provider_id, record.models, record.error) != before:
            self.touch(Section.MODELS)

    def apply_event(self, event: dict[str, Any]) -> Refresh:
        """Apply one lattice event; answer what is worth fetching again."""
        name = event_name(event)
        data = event.get("data") or {}
        now = self.clock()
        at = parse_time(event.get("time"), now)
        if name == "host_heartbeat":
            host = self._host(data.get("id") or event.get("source", ""))
            host.last_heartbeat = at
            self._update_host(host, data, now)
            if isinstance(data.get("inventory"), dict):
                self.apply_inventory({"host_id": host.id, **data["inventory"]})
            self.touch(Section.HOSTS)
            return Refresh.NONE
        self._add_to_feed(name, event, data, at)
        if name == "host_started":
            host = self._host(data.get("host_id") or event.get("source", ""))
            host.started_at = at
            host.last_heartbeat = at
            self._update_host(host, data, now)
            return Refresh.INVENTORY
        if name == "host_stopped":
            self.forget_host(data.get("host_id") or event.get("source", ""))
            return Refresh.NONE
        if name in INSTANCE_EVENTS:
            known = self._apply_instance_event(data, at)
            wants = Refresh.MODELS if name.startswith("provider") or "health" in name else Refresh.NONE
            if not known or name.endswith(("_started", "_stopped")):
                wants |= Refresh.INVENTORY
            return wants
        if name == "linkdef_set":
            link = {k: data.get(k) for k in ("actor_id", "provider_id", "contract_id", "link_name", "values")}
            others = [l for l in self.links if _link_id(l) != _link_id(link)]
            self.apply_links([*others, link])
            return Refresh.MODELS
        if name == "linkdef_deleted":
            self.apply_links([l for l in self.links if _link_id(l) != _link_id(data)])
            return Refresh.MODELS
        if name.startswith("model_"):
            return Refresh.MODELS
        return Refresh.NONE

    # ---- reading -----------------------------------------------------------------------

    def mlinference_links(self, contract_id: str) -> list[dict[str, Any]]:
        return [l for l in self.links if l.get("contract_id") == contract_id]

    def launch_spec(self, host_id: str, provider_id: str, link_name: str) -> dict[str, Any] | None:
        """What a provider was last seen started with: ``{ref, link_name, config}``."""
        return self.provider_launch.get((host_id, provider_id, link_name))

    def view(self, section: Section) -> Any:
        return {
            Section.STATUS: self._status_view,
            Section.HOSTS: self._hosts_view,
            Section.ACTORS: self._actors_view,
            Section.PROVIDERS: self._providers_view,
            Section.LINKS: self._links_view,
            Section.MODELS: self._models_view,
        }[section]()

    def snapshot(self) -> dict[str, Any]:
        return {
            "server_time": self.clock(),
            "sections": {str(s): self.view(s) for s in Section},
            "feed": list(self.feed),
        }

    def feed_since(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.feed if e["seq"] > seq]

    # ---- internals ---------------------------------------------------------------------

    def _host(self, host_id: str) -> HostRecord:
        host = self.hosts.get(host_id)
        if host is None:
            host = self.hosts[host_id] = HostRecord(host_id)
            self.touch(Section.HOSTS)
        return host

    def _update_host(self, host: HostRecord, info: dict[str, Any], now: float) -> None:
        before = (host.labels, host.version, host.started_at, host.missing_since)
        host.last_seen = now
        host.missing_since = None
        if isinstance(info.get("labels"), dict):
            host.labels = dict(info["labels"])
        host.version = str(info.get("version") or host.version)
        if isinstance(info.get("uptime_seconds"), (int, float)):
            started = round(now - info["uptime_seconds"])
            # The round trip blurs the start time by a fraction of a second; ignore that jitter.
            if host.started_at is None or abs(started - host.started_at) > 2:
                host.started_at = started
        if (host.labels, host.version, host.started_at, host.missing_since) != before:
            self.touch(Section.HOSTS)

    def _merge_newer_statuses(self, previous: dict[str, Any] | None, inventory: dict[str, Any]) -> dict[str, Any]:
        if not previous:
            return inventory
        known = {
            i["instance_id"]: i
            for kind in ("actors", "providers") for c in previous.get(kind, []) for i in c.get("instances", [])
        }
        for kind in ("actors", "providers"):
            for component in inventory.get(kind, []):
                for instance in component.get("instances", []):
                    old = known.get(instance.get("instance_id"))
                    if old and (old.get("status_since") or 0) > (instance.get("status_since") or 0):
                        instance.update(status=old["status"], status_since=old["status_since"],
                                        restarts=max(old.get("restarts", 0), instance.get("restarts", 0)))
        return inventory

    def _track_providers(self, host_id: str, previous: dict[str, Any] | None,
                         inventory: dict[str, Any], now: float) -> None:
        running = {(host_id, p["id"], p.get("link_name", "default")): p for p in inventory.get("providers", [])}
        for key, provider in running.items():
            self.provider_launch[key] = {
                "ref": provider.get("image_ref", ""),
                "link_name": key[2],
                "config": dict(provider.get("config") or {}),
            }
            if self.stopped_providers.pop(key, None) is not None:
                self.touch(Section.PROVIDERS)
        for provider in (previous or {}).get("providers", []):
            key = (host_id, provider["id"], provider.get("link_name", "default"))
            if key not in running and key not in self.stopped_providers:
                self.stopped_providers[key] = {**provider, "instances": [], "stopped_at": now}
                self.touch(Section.PROVIDERS)

    def _apply_instance_event(self, data: dict[str, Any], at: float) -> bool:
        inventory = self.inventories.get(data.get("host_id", ""))
        instance_id = data.get("instance_id")
        for kind in ("actors", "providers"):
            for component in (inventory or {}).get(kind, []):
                for instance in component.get("instances", []):
                    if instance.get("instance_id") != instance_id:
                        continue
                    if at >= (instance.get("status_since") or 0):
                        instance["status"] = data.get("status", instance.get("status"))
                        instance["status_since"] = at
                    instance["restarts"] = max(int(data.get("restarts") or 0), instance.get("restarts", 0))
                    self.touch(Section.HOSTS, Section.ACTORS, Section.PROVIDERS)
                    return True
        return False

    def _add_to_feed(self, name: str, event: dict[str, Any], data: dict[str, Any], at: float) -> None:
        self.feed_seq += 1
        summary = mask_event_data({k: v for k, v in data.items() if k != "inventory"})
        self.feed.append({"seq": self.feed_seq, "time": at, "name": name,
                          "source": event.get("source", ""), "data": summary})

    def _component_names(self) -> dict[str, str]:
        names = {}
        for record in self.stopped_providers.values():
            names[record["id"]] = record.get("name", "")
        for inventory in self.inventories.values():
            for kind in ("actors", "providers"):
                for component in inventory.get(kind, []):
                    names[component["id"]] = component.get("name", "")
        return names

    def _status_view(self) -> dict[str, Any]:
        return {"connected": self.connected, "error": self.error, "last_update": self.last_update,
                "lattice": self.lattice, "nats_url": self.nats_url}

    def _hosts_view(self) -> list[dict[str, Any]]:
        return [h.view(self.inventories.get(h.id)) for h in sorted(self.hosts.values(), key=lambda h: h.id)]

    def _actors_view(self) -> list[dict[str, Any]]:
        actors: dict[str, dict[str, Any]] = {}
        for host_id in sorted(self.inventories):
            for actor in self.inventories[host_id].get("actors", []):
                row = actors.setdefault(actor["id"], {
                    **{k: actor.get(k) for k in ("id", "name", "image_ref", "digest", "version", "revision")},
                    "capabilities": list(actor.get("capabilities") or []),
                    "hosts": [],
                })
                instances = [dict(i) for i in actor.get("instances", [])]
                row["hosts"].append({"host_id": host_id, "count": len(instances), "instances": instances})
        for row in actors.values():
            instances = [i for h in row["hosts"] for i in h["instances"]]
            row["instances"] = len(instances)
            row["status"] = worst_status(i.get("status", "") for i in instances)
            row["status_since"] = max((i.get("status_since") or 0 for i in instances), default=None)
            row["restarts"] = sum(i.get("restarts", 0) for i in instances)
        return sorted(actors.values(), key=lambda a: (a.get("name") or "", a["id"]))

    def _providers_view(self) -> list[dict[str, Any]]:
        rows = []
        for host_id in sorted(self.inventories):
            for provider in self.inventories[host_id].get("providers", []):
                rows.append(self._provider_row(host_id, provider, stopped_at=None))
        for (host_id, _, _), provider in self.stopped_providers.items():
            rows.append(self._provider_row(host_id, provider, stopped_at=provider["stopped_at"]))
        return sorted(rows, key=lambda p: (p["name"] or "", p["link_name"], p["host_id"]))

    def _provider_row(self, host_id: str, provider: dict[str, Any], stopped_at: float | None) -> dict[str, Any]:
        instances = [dict(i) for i in provider.get("instances", [])]
        return {
            **{k: provider.get(k) for k in ("id", "name", "image_ref", "digest", "version", "revision", "contract_id")},
            "link_name": provider.get("link_name", "default"),
            "host_id": host_id,
            "config": mask_values(provider.get("config")),
            "instances": instances,
            "status": "stopped" if stopped_at is not None else worst_status(i.get("status", "") for i in instances),
            "status_since": stopped_at if stopped_at is not None
            else max((i.get("status_since") or 0 for i in instances), default=None),
            "restarts": sum(i.get("restarts", 0) for i in instances),
        }

    def _links_view(self) -> list[dict[str, Any]]:
        names = self._component_names()
        return [{
            "actor_id": l["actor_id"], "actor_name": names.get(l["actor_id"], ""),
            "provider_id": l["provider_id"], "provider_name": names.get(l["provider_id"], ""),
            "contract_id": l["contract_id"], "link_name": l.get("link_name", "default"),
            "values": mask_values(l.get("values")),
        } for l in self.links]

    def _models_view(self) -> list[dict[str, Any]]:
        names = self._component_names()
        rows = []
        for key in sorted(self.models):
            record = self.models[key]
            where = {"actor_id": record.actor_id, "actor_name": names.get(record.actor_id, ""),
                     "provider_id": record.provider_id, "provider_name": names.get(record.provider_id, ""),
                     "link_name": record.link_name, "updated_at": record.updated_at or None}
            if not record.models and record.error:
                rows.append({**where, "name": "", "bindle_id": "", "engine": "", "state": "UNREACHABLE",
                             "reason": record.error, "requests": None, "errors": None,
                             "p50_ms": None, "p99_ms": None, "stale": True})
                continue
            for model in record.models:
                rows.append({**where, **model, "stale": bool(record.error),
                             "stale_reason": record.error})
        return rows


def _link_id(link: dict[str, Any]) -> tuple[str, str, str]:
    return (link.get("actor_id", ""), link.get("contract_id", ""), link.get("link_name") or "default")
