"""What the washboard knows about the lattice: one aggregate fed by events, polls and model status.

:class:`LatticeState` does no I/O. The watcher feeds it host pings, inventories, links, model
status replies and lattice events; the web app reads *views* of it (JSON-ready lists, one per
:class:`Section`) and the feed of recent events. Every change marks its section dirty, so the
page is sent only the sections that changed.

Events and polls race: an inventory requested just before an instance died can arrive just after
the ``health_check_failed`` event. Each instance keeps the newest of the two by ``status_since``
(both stamped by the host's clock), so a late poll never rolls a status back. Likewise a link's
models can be known before the inventory that shows its actor or provider: the models view shows
them once it can say which actor and provider serve them.

Everything it is fed is a control-plane struct (:mod:`mlcloud.lattice.control`) or a
:class:`~mlcloud.interfaces.ModelInfo`; the views are the page's JSON.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mlcloud.experiments import SPLIT_PREFIX
from mlcloud.interfaces import ModelInfo
from mlcloud.lattice.control import (
    ComponentInfo,
    EventName,
    HostHeartbeat,
    HostInfo,
    HostInventory,
    HostStarted,
    HostStopped,
    InstanceChanged,
    LinkDefinition,
    ModelChanged,
    ProviderInfo,
)
from mlcloud.lattice.events import Event
from mlcloud.masking import mask_event_data, mask_values

FEED_SIZE = 200
# A host that stops answering pings is shown as missing, then forgotten after this long.
HOST_FORGET_AFTER = 60.0
STATUS_ORDER = ("unhealthy", "awaiting", "healthy", "stopped")

class Section(enum.StrEnum):
    STATUS = "status"
    HOSTS = "hosts"
    ACTORS = "actors"
    PROVIDERS = "providers"
    LINKS = "links"
    MODELS = "models"
    EXPERIMENTS = "experiments"


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
    dev: bool = False  # started with the development flag: runs unsigned local folders

    def view(self, inventory: HostInventory | None) -> dict[str, Any]:
        actors = inventory.actors if inventory else []
        providers = inventory.providers if inventory else []
        return {
            "id": self.id,
            "labels": dict(self.labels),
            "version": self.version,
            "started_at": self.started_at,
            "last_heartbeat": self.last_heartbeat,
            "status": "missing" if self.missing_since is not None else "up",
            "missing_since": self.missing_since,
            "dev": self.dev,
            "actors": len(actors),
            "actor_instances": sum(len(a.instances) for a in actors),
            "providers": len(providers),
        }


@dataclass
class ModelsRecord:
    """The last Status answer of one mlinference link, and whether the last call failed."""

    actor_id: str
    link_name: str
    provider_id: str
    models: list[ModelInfo] = field(default_factory=list)
    error: str = ""
    updated_at: float = 0.0


ProviderKey = tuple[str, str, str]  # host id, provider key, link name


@dataclass
class StoppedProvider:
    """A provider seen running and gone since: shown as stopped so the page can start it again."""

    info: ProviderInfo
    stopped_at: float


@dataclass(frozen=True)
class LaunchSpec:
    """What a provider was started with, to start it again."""

    ref: str
    link_name: str
    config: dict[str, Any]


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
        self.inventories: dict[str, HostInventory] = {}
        self.links: list[LinkDefinition] = []
        self.models: dict[tuple[str, str], ModelsRecord] = {}
        self.experiments: list[dict[str, Any]] = []  # the api's GET /experiments (mlcloud.experiments.report)
        self.experiments_error = ""
        self.stopped_providers: dict[ProviderKey, StoppedProvider] = {}
        self.provider_launch: dict[ProviderKey, LaunchSpec] = {}
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

    def apply_hosts(self, pings: list[HostInfo]) -> None:
        """One round of host pings: who answered is up, who did not is missing, then forgotten."""
        now = self.clock()
        answered = set()
        for ping in pings:
            host = self._host(ping.id)
            answered.add(host.id)
            self._update_host(host, now, ping.labels, ping.version, ping.uptime_seconds, ping.dev)
        for host in list(self.hosts.values()):
            if host.id in answered:
                continue
            if host.missing_since is None:
                host.missing_since = now
                self.touch(Section.HOSTS)
            elif now - host.last_seen > self.host_forget_after:
                self.forget_host(host.id)

    def apply_inventory(self, inventory: HostInventory) -> None:
        host_id = inventory.host_id
        now = self.clock()
        host = self._host(host_id)
        self._update_host(host, now, inventory.labels, inventory.version, inventory.uptime_seconds, inventory.dev)
        previous = self.inventories.get(host_id)
        self._keep_newer_statuses(previous, inventory)
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

    def apply_links(self, links: list[LinkDefinition]) -> None:
        ordered = sorted(links, key=lambda link: (link.actor_id, link.contract_id, link.link_name))
        if ordered != self.links:
            self.links = ordered
            known = {(link.actor_id, link.link_name) for link in ordered}
            for key in [k for k in self.models if k not in known]:
                del self.models[key]
            self.touch(Section.LINKS, Section.MODELS)

    def apply_models(self, actor_id: str, link_name: str, provider_id: str,
                     models: list[ModelInfo] | None, error: str = "") -> None:
        """A Status reply (``models``) or the reason the call failed (``error``)."""
        key = (actor_id, link_name)
        is_new = key not in self.models
        record = self.models.get(key) or ModelsRecord(actor_id, link_name, provider_id)
        before = (record.provider_id, list(record.models), record.error)
        record.provider_id = provider_id
        record.error = error
        if models is not None:
            record.models = sorted(models, key=lambda m: m.name)
            record.updated_at = self.clock()
        self.models[key] = record
        if is_new or (record.provider_id, record.models, record.error) != before:
            self.touch(Section.MODELS)

    def apply_experiments(self, experiments: list[dict[str, Any]] | None, error: str = "") -> None:
        """The api's report of every split (``experiments``), or why it could not be read (``error``)."""
        before = (self.experiments, self.experiments_error)
        self.experiments = self.experiments if experiments is None else experiments
        self.experiments_error = error
        if (self.experiments, self.experiments_error) != before:
            self.touch(Section.EXPERIMENTS)

    def split_routes(self) -> list[str]:
        """The routes whose link values hold a split: the experiments worth asking the api about."""
        return sorted({k.removeprefix(SPLIT_PREFIX) for link in self.links for k in link.values
                       if k.startswith(SPLIT_PREFIX)})

    def apply_event(self, event: Event) -> Refresh:
        """Apply one lattice event; answer what is worth fetching again."""
        data = event.data
        now = self.clock()
        at = event.timestamp or now
        if isinstance(data, HostHeartbeat):
            host = self._host(data.id or event.source)
            host.last_heartbeat = at
            self._update_host(host, now, data.labels, data.version, data.uptime_seconds, data.dev)
            self.apply_inventory(msgspec.structs.replace(data.inventory, host_id=host.id))
            self.touch(Section.HOSTS)
            return Refresh.NONE
        self._add_to_feed(event, at)
        if isinstance(data, HostStarted):
            host = self._host(data.host_id or event.source)
            host.started_at = at
            host.last_heartbeat = at
            self._update_host(host, now, data.labels, data.version, None)
            return Refresh.INVENTORY
        if isinstance(data, HostStopped):
            self.forget_host(data.host_id or event.source)
            return Refresh.NONE
        if isinstance(data, InstanceChanged):
            known = self._apply_instance_event(data, at)
            name = event.name
            wants = Refresh.MODELS if name.startswith("provider") or "health" in name else Refresh.NONE
            if not known or name.endswith(("_started", "_stopped")):
                wants |= Refresh.INVENTORY
            return wants
        if isinstance(data, LinkDefinition):
            others = [link for link in self.links if not link.same_link(data)]
            self.apply_links(others if event.name == EventName.LINKDEF_DELETED else [*others, data])
            return Refresh.MODELS
        if isinstance(data, ModelChanged):
            return Refresh.MODELS
        return Refresh.NONE

    # ---- reading -----------------------------------------------------------------------

    def mlinference_links(self, contract_id: str) -> list[LinkDefinition]:
        return [link for link in self.links if link.contract_id == contract_id]

    def launch_spec(self, host_id: str, provider_id: str, link_name: str) -> LaunchSpec | None:
        """What a provider was last seen started with."""
        return self.provider_launch.get((host_id, provider_id, link_name))

    def view(self, section: Section) -> Any:
        return {
            Section.STATUS: self._status_view,
            Section.HOSTS: self._hosts_view,
            Section.ACTORS: self._actors_view,
            Section.PROVIDERS: self._providers_view,
            Section.LINKS: self._links_view,
            Section.MODELS: self._models_view,
            Section.EXPERIMENTS: self._experiments_view,
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

    def _update_host(self, host: HostRecord, now: float, labels: dict[str, str], version: str,
                     uptime_seconds: float | None, dev: bool | None = None) -> None:
        before = (host.labels, host.version, host.started_at, host.missing_since, host.dev)
        host.last_seen = now
        host.missing_since = None
        host.labels = dict(labels)
        host.version = version or host.version
        host.dev = host.dev if dev is None else dev
        if uptime_seconds is not None:
            started = round(now - uptime_seconds)
            # The round trip blurs the start time by a fraction of a second; ignore that jitter.
            if host.started_at is None or abs(started - host.started_at) > 2:
                host.started_at = started
        if (host.labels, host.version, host.started_at, host.missing_since, host.dev) != before:
            self.touch(Section.HOSTS)

    def _keep_newer_statuses(self, previous: HostInventory | None, inventory: HostInventory) -> None:
        """Where the last inventory or event knew a newer status of an instance, keep that one."""
        if previous is None:
            return
        known = {i.instance_id: i for c in previous.components() for i in c.instances}
        for component in inventory.components():
            for instance in component.instances:
                old = known.get(instance.instance_id)
                if old and old.status_since > instance.status_since:
                    instance.status, instance.status_since = old.status, old.status_since
                    instance.restarts = max(old.restarts, instance.restarts)

    def _track_providers(self, host_id: str, previous: HostInventory | None,
                         inventory: HostInventory, now: float) -> None:
        running = {(host_id, p.id, p.link_name): p for p in inventory.providers}
        for key, provider in running.items():
            self.provider_launch[key] = LaunchSpec(provider.image_ref, key[2], dict(provider.config))
            if self.stopped_providers.pop(key, None) is not None:
                self.touch(Section.PROVIDERS)
        for provider in previous.providers if previous else []:
            key = (host_id, provider.id, provider.link_name)
            if key not in running and key not in self.stopped_providers:
                self.stopped_providers[key] = StoppedProvider(msgspec.structs.replace(provider, instances=[]), now)
                self.touch(Section.PROVIDERS)

    def _apply_instance_event(self, data: InstanceChanged, at: float) -> bool:
        inventory = self.inventories.get(data.host_id)
        for component in inventory.components() if inventory else []:
            for instance in component.instances:
                if instance.instance_id != data.instance_id:
                    continue
                if at >= instance.status_since:
                    instance.status, instance.status_since = data.status, at
                instance.restarts = max(data.restarts, instance.restarts)
                self.touch(Section.HOSTS, Section.ACTORS, Section.PROVIDERS)
                return True
        return False

    def _add_to_feed(self, event: Event, at: float) -> None:
        self.feed_seq += 1
        self.feed.append({"seq": self.feed_seq, "time": at, "name": event.name, "source": event.source,
                          "data": mask_event_data(msgspec.to_builtins(event.data))})

    def _component_names(self) -> dict[str, str]:
        names = {stopped.info.id: stopped.info.name for stopped in self.stopped_providers.values()}
        for inventory in self.inventories.values():
            for component in inventory.components():
                names[component.id] = component.name
        return names

    def _status_view(self) -> dict[str, Any]:
        return {"connected": self.connected, "error": self.error, "last_update": self.last_update,
                "lattice": self.lattice, "nats_url": self.nats_url}

    def _hosts_view(self) -> list[dict[str, Any]]:
        return [h.view(self.inventories.get(h.id)) for h in sorted(self.hosts.values(), key=lambda h: h.id)]

    def _actors_view(self) -> list[dict[str, Any]]:
        actors: dict[str, dict[str, Any]] = {}
        for host_id in sorted(self.inventories):
            for actor in self.inventories[host_id].actors:
                row = actors.setdefault(actor.id, {**_identity(actor), "hosts": []})
                instances = [msgspec.to_builtins(i) for i in actor.instances]
                row["hosts"].append({"host_id": host_id, "count": len(instances), "instances": instances})
        for row in actors.values():
            instances = [i for h in row["hosts"] for i in h["instances"]]
            row.update(instances=len(instances), **_instances_summary(instances))
        return sorted(actors.values(), key=lambda a: (a["name"], a["id"]))

    def _providers_view(self) -> list[dict[str, Any]]:
        rows = []
        for host_id in sorted(self.inventories):
            for provider in self.inventories[host_id].providers:
                rows.append(self._provider_row(host_id, provider, stopped_at=None))
        for (host_id, _, _), stopped in self.stopped_providers.items():
            rows.append(self._provider_row(host_id, stopped.info, stopped_at=stopped.stopped_at))
        return sorted(rows, key=lambda p: (p["name"], p["link_name"], p["host_id"]))

    def _provider_row(self, host_id: str, provider: ProviderInfo, stopped_at: float | None) -> dict[str, Any]:
        instances = [msgspec.to_builtins(i) for i in provider.instances]
        row = {**_identity(provider), "contract_id": provider.contract_id, "link_name": provider.link_name,
               "host_id": host_id, "config": mask_values(provider.config), "instances": instances,
               **_instances_summary(instances)}
        if stopped_at is not None:
            row.update(status="stopped", status_since=stopped_at)
        return row

    def _links_view(self) -> list[dict[str, Any]]:
        names = self._component_names()
        return [{
            "actor_id": link.actor_id, "actor_name": names.get(link.actor_id, ""),
            "provider_id": link.provider_id, "provider_name": names.get(link.provider_id, ""),
            "contract_id": link.contract_id, "link_name": link.link_name,
            "values": mask_values(link.values),
        } for link in self.links]

    def _experiments_view(self) -> dict[str, Any]:
        return {"splits": self.experiments, "error": self.experiments_error}

    def _models_view(self) -> list[dict[str, Any]]:
        """One row per model, once the washboard knows the actor and provider whose link serves it."""
        names = self._component_names()
        rows: list[dict[str, Any]] = []
        for key in sorted(self.models):
            record = self.models[key]
            if record.actor_id not in names or record.provider_id not in names:
                continue  # the next inventory poll names them; until then there is nobody to show
            where = {"actor_id": record.actor_id, "actor_name": names[record.actor_id],
                     "provider_id": record.provider_id, "provider_name": names[record.provider_id],
                     "link_name": record.link_name, "updated_at": record.updated_at or None}
            if not record.models and record.error:
                rows.append({**where, "name": "", "bindle_id": "", "engine": "", "state": "UNREACHABLE",
                             "reason": record.error, "requests": None, "errors": None,
                             "p50_ms": None, "p99_ms": None, "stale": True})
                continue
            for model in record.models:
                rows.append({**where, **_model_row(model), "stale": bool(record.error),
                             "stale_reason": record.error})
        return rows


def _identity(component: ComponentInfo) -> dict[str, Any]:
    return {"id": component.id, "name": component.name, "image_ref": component.image_ref,
            "digest": component.digest, "version": component.version, "revision": component.revision,
            "capabilities": list(component.capabilities)}


def _instances_summary(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst status, latest change and restarts of a component's instances (as the page reads them)."""
    return {
        "status": worst_status(i["status"] for i in instances),
        "status_since": max((i["status_since"] for i in instances), default=None),
        "restarts": sum(i["restarts"] for i in instances),
    }


def _model_row(model: ModelInfo) -> dict[str, Any]:
    """A ModelInfo under its Python field names (the page's), its values JSON-ready."""
    return {f.name: msgspec.to_builtins(getattr(model, f.name)) for f in msgspec.structs.fields(ModelInfo)}
