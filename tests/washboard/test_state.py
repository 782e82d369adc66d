"""The aggregator without NATS: events, polls and model status in, views and dirty sections out."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from mlcloud.interfaces import ModelInfo
from mlcloud.lattice.control import ComponentInfo, HostInfo, HostInventory, LinkDefinition, ProviderInfo
from mlcloud.lattice.events import EVENT_TYPE_PREFIX, Event, decode_event
from mlcloud.masking import MASK
from mlcloud.washboard.state import LatticeState, Refresh, Section


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def instance(instance_id: str, status: str = "healthy", since: float = 999_990.0, restarts: int = 0) -> dict[str, Any]:
    return {"instance_id": instance_id, "pid": 100, "status": status, "status_since": since, "restarts": restarts}


def inventory(host_id: str = "NHOST", *, actors: int = 1, echo: bool = True, **echo_instance: Any) -> HostInventory:
    return msgspec.convert(inventory_json(host_id, actors=actors, echo=echo, **echo_instance), HostInventory)


def inventory_json(
    host_id: str = "NHOST", *, actors: int = 1, echo: bool = True, **echo_instance: Any
) -> dict[str, Any]:
    inv = {
        "host_id": host_id, "labels": {"arch": "x86_64", "hostname": "box"}, "version": "0.1.0", "uptime_seconds": 30.0,
        "actors": [{"id": "MCALLER", "name": "caller", "image_ref": "localhost:5000/caller:0.1.0",
                    "digest": "sha256:ab", "version": "0.1.0", "revision": 1, "capabilities": ["test:echo"],
                    "instances": [instance(f"a{i}") for i in range(actors)]}] if actors else [],
        "providers": [],
    }
    if echo:
        inv["providers"].append({
            "id": "VECHO", "name": "echo", "image_ref": "localhost:5000/echo:0.1.0", "digest": "sha256:cd",
            "version": "0.1.0", "revision": 1, "capabilities": [], "contract_id": "test:echo", "link_name": "default",
            "config": {"greeting": "hi", "db_password": "hunter2"},
            "instances": [instance("p1", **echo_instance)],
        })
    return inv


def event(name: str, /, at: str = "1970-01-12T13:46:45+00:00", **data: Any) -> Event:
    """The event as a host publishes it (``at`` is 1_000_005.0 s after the epoch), read back as the watcher does."""
    raw = {"id": uuid.uuid4().hex, "source": "NHOST", "type": EVENT_TYPE_PREFIX + name, "time": at, "data": data}
    return decode_event(msgspec.json.encode(raw))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> LatticeState:
    s = LatticeState("lab", "nats://x:4222", clock=clock)
    s.take_dirty()
    return s


def test_inventory_feeds_hosts_actors_and_providers(state: LatticeState, clock: Clock):
    state.apply_hosts([HostInfo(id="NHOST", labels={"arch": "x86_64"}, version="0.1.0", uptime_seconds=30.0)])
    state.apply_inventory(inventory(actors=2))
    assert state.take_dirty() >= {Section.HOSTS, Section.ACTORS, Section.PROVIDERS}
    [host] = state.view(Section.HOSTS)
    assert host["status"] == "up" and host["started_at"] == clock.now - 30 and host["actor_instances"] == 2
    [actor] = state.view(Section.ACTORS)
    assert (actor["name"], actor["instances"], actor["status"]) == ("caller", 2, "healthy")
    assert actor["hosts"] == [{"host_id": "NHOST", "count": 2, "instances": actor["hosts"][0]["instances"]}]
    [provider] = state.view(Section.PROVIDERS)
    assert provider["config"] == {"greeting": "hi", "db_password": MASK}
    launch = state.launch_spec("NHOST", "VECHO", "default")
    assert launch is not None and launch.config["db_password"] == "hunter2"


def test_an_unchanged_poll_marks_nothing_dirty(state: LatticeState):
    state.apply_inventory(inventory())
    state.take_dirty()
    state.apply_inventory(inventory())
    assert state.take_dirty() == set()


def test_health_event_updates_the_instance_at_once_and_a_late_poll_does_not_roll_it_back(state: LatticeState):
    state.apply_inventory(inventory())
    wants = state.apply_event(event("health_check_failed", host_id="NHOST", public_key="VECHO", name="echo",
                                    instance_id="p1", status="unhealthy", reason="process exited with code -9",
                                    restarts=0))
    assert Refresh.MODELS in wants and Refresh.INVENTORY not in wants
    assert state.view(Section.PROVIDERS)[0]["status"] == "unhealthy"
    # An inventory fetched before the failure arrives after it: the newer status wins.
    state.apply_inventory(inventory(status="healthy", since=999_990.0))
    assert state.view(Section.PROVIDERS)[0]["status"] == "unhealthy"
    # A genuinely newer poll (the restarted instance is back) replaces it.
    state.apply_inventory(inventory(status="healthy", since=1_000_009.0, restarts=1))
    provider = state.view(Section.PROVIDERS)[0]
    assert (provider["status"], provider["restarts"]) == ("healthy", 1)


def test_event_about_an_unknown_instance_asks_for_an_inventory(state: LatticeState):
    wants = state.apply_event(event("actor_started", host_id="NHOST", public_key="MNEW", name="new", instance_id="zz",
                                    status="healthy"))
    assert Refresh.INVENTORY in wants
    assert state.feed[-1]["name"] == "actor_started"


def test_heartbeat_carries_the_inventory_but_stays_out_of_the_feed(state: LatticeState, clock: Clock):
    inv = inventory_json()
    state.apply_event(event("host_heartbeat", id="NHOST", labels=inv["labels"], version="0.1.0",
                            uptime_seconds=30.0, inventory=inv))
    assert not state.feed
    [host] = state.view(Section.HOSTS)
    assert host["last_heartbeat"] == pytest.approx(1_000_005.0)
    assert state.view(Section.ACTORS)[0]["name"] == "caller"


def test_a_provider_that_disappears_stays_listed_as_stopped_until_it_runs_again(state: LatticeState):
    state.apply_inventory(inventory())
    state.apply_inventory(inventory(echo=False))
    [stopped] = state.view(Section.PROVIDERS)
    assert (stopped["name"], stopped["status"], stopped["instances"]) == ("echo", "stopped", [])
    launch = state.launch_spec("NHOST", "VECHO", "default")
    assert launch is not None and launch.ref == "localhost:5000/echo:0.1.0"
    state.apply_inventory(inventory())
    assert [p["status"] for p in state.view(Section.PROVIDERS)] == ["healthy"]


def test_hosts_that_stop_answering_are_missing_then_forgotten(state: LatticeState, clock: Clock):
    state.apply_hosts([HostInfo(id="NHOST", uptime_seconds=1.0)])
    state.apply_inventory(inventory())
    clock.now += 2
    state.apply_hosts([])
    assert state.view(Section.HOSTS)[0]["status"] == "missing"
    clock.now += 120
    state.apply_hosts([])
    assert state.view(Section.HOSTS) == [] and state.view(Section.ACTORS) == []


def test_host_stopped_event_forgets_the_host(state: LatticeState):
    state.apply_inventory(inventory())
    state.apply_event(event("host_stopped", host_id="NHOST"))
    assert state.view(Section.HOSTS) == [] and state.view(Section.PROVIDERS) == []


def test_link_events_update_links_with_masked_values(state: LatticeState):
    state.apply_inventory(inventory())
    link = {"actor_id": "MCALLER", "provider_id": "VECHO", "contract_id": "test:echo", "link_name": "default",
            "values": {"token": "t0p", "model": "m/1.0.0"}}  # as linkdef_set carries it
    assert Refresh.MODELS in state.apply_event(event("linkdef_set", **link))
    [view] = state.view(Section.LINKS)
    assert view["values"] == {"token": MASK, "model": "m/1.0.0"}
    assert (view["actor_name"], view["provider_name"]) == ("caller", "echo")
    assert state.feed[-1]["data"]["values"]["token"] == MASK
    state.apply_event(event("linkdef_deleted", **link))
    assert state.view(Section.LINKS) == []


ML_LINK = LinkDefinition(actor_id="MAPI", provider_id="VML", contract_id="wasmcloud:mlinference")
PLUS3 = ModelInfo(name="plus3", bindle_id="plus3/0.1.0", engine="tract", state="READY", requests=10, errors=1,
                  p50_ms=1.5, p99_ms=4.0)


def api_and_mlinference() -> HostInventory:
    return HostInventory(
        host_id="NHOST", actors=[ComponentInfo(id="MAPI", name="api", image_ref="localhost:5000/api:0.1.0")],
        providers=[ProviderInfo(id="VML", name="mlinference", image_ref="localhost:5000/mlinference:0.1.0",
                                contract_id="wasmcloud:mlinference")],
    )


def test_models_are_shown_once_the_actor_and_provider_serving_them_are_known(state: LatticeState):
    # The link (an event) and its models (a Status call) can come before the inventory poll
    # that names the link's actor: no row may claim a model is served by nobody.
    state.apply_links([ML_LINK])
    state.apply_models("MAPI", "default", "VML", [PLUS3])
    assert state.view(Section.MODELS) == []
    state.apply_inventory(api_and_mlinference())
    [row] = state.view(Section.MODELS)
    assert (row["name"], row["actor_name"], row["provider_name"]) == ("plus3", "api", "mlinference")


def test_models_rows_show_state_figures_and_unreachable_providers(state: LatticeState):
    link = ML_LINK
    state.apply_inventory(api_and_mlinference())
    state.apply_links([link])
    state.apply_models("MAPI", "default", "VML", [PLUS3])
    [row] = state.view(Section.MODELS)
    assert (row["name"], row["state"], row["p99_ms"], row["stale"]) == ("plus3", "READY", 4.0, False)
    state.apply_models("MAPI", "default", "VML", None, "RpcTimeout: no answer")
    [row] = state.view(Section.MODELS)
    assert row["stale"] is True and row["stale_reason"] == "RpcTimeout: no answer" and row["state"] == "READY"
    state.apply_links([])  # the link went away: so do its models
    assert state.view(Section.MODELS) == []
    state.apply_links([link])
    state.apply_models("MAPI", "default", "VML", None, "NoResponders: nobody serves it")
    [row] = state.view(Section.MODELS)
    assert row["state"] == "UNREACHABLE" and "NoResponders" in row["reason"]


def test_connection_changes_and_polls_touch_the_status_section(state: LatticeState, clock: Clock):
    state.set_connection(True)
    assert state.take_dirty() == {Section.STATUS}
    state.set_connection(True)
    assert state.take_dirty() == set()
    state.mark_polled()
    assert state.view(Section.STATUS)["last_update"] == clock.now


def test_feed_keeps_the_latest_events_with_increasing_sequence_numbers(clock: Clock):
    state = LatticeState("lab", "nats://x", clock=clock, feed_size=3)
    for i in range(5):
        state.apply_event(event("component_refused", host_id="NHOST", image_ref=f"ref{i}", kind="ClaimsError",
                                reason="bad signature"))
    assert [e["seq"] for e in state.feed] == [3, 4, 5]
    assert [e["seq"] for e in state.feed_since(4)] == [5]


def test_experiments_are_asked_for_only_while_a_link_holds_a_split(state: LatticeState):
    assert state.split_routes() == []
    split = '{"policy": "fixed", "weights": {"1.0.0": 0.5, "2.0.0": 0.5}}'
    state.apply_links([msgspec.structs.replace(ML_LINK, values={"iris": "iris/2.0.0", "iris@1.0.0": "iris/1.0.0",
                                                                "iris@2.0.0": "iris/2.0.0", "split.iris": split})])
    assert state.split_routes() == ["iris"]
    state.take_dirty()
    report = [{"route": "iris", "policy": "fixed", "arms": []}]
    state.apply_experiments(report)
    assert state.take_dirty() == {Section.EXPERIMENTS}
    state.apply_experiments(report)
    assert state.take_dirty() == set()
    state.apply_experiments(None, "the HTTP API did not answer")  # the last report stays, with the reason
    assert state.view(Section.EXPERIMENTS) == {"splits": report, "error": "the HTTP API did not answer"}
