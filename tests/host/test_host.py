"""A real host running real instance processes on a real nats-server."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from nats.aio.msg import Msg

from mlcloud.errors import (
    CapabilityNotClaimed,
    ComponentNotFound,
    ConfigError,
    HostError,
    InstanceDied,
    LinkNotFound,
    NotFound,
    RpcTimeout,
)
from mlcloud.host.artifacts import resolve_local
from mlcloud.host.host import Host
from mlcloud.lattice import subjects
from mlcloud.lattice.control import EventName, InstanceStatus
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.events import decode_event
from mlcloud.lattice.lifecycle import State
from mlcloud.lattice.rpc import RpcClient
from tests.conftest import COMPONENTS, host_connection

CALLER = str(COMPONENTS / "caller")
ECHO = str(COMPONENTS / "echo")


@pytest.fixture
async def host(settings):
    async with Host(settings, labels={"zone": "test"}) as h:
        yield h


@pytest.fixture
async def ctl(settings, host):
    client = await CtlClient.connect(settings)
    yield client
    await client.close()


@pytest.fixture
async def rpc(settings):
    nc = await host_connection(settings)
    yield RpcClient(nc, caller="test", timeout=5)
    await nc.close()


def as_host(rpc: RpcClient, host: Host) -> RpcClient:
    """Calls made as the host, which a provider serves without a link (its health checks, its models)."""
    return RpcClient(rpc.nc, caller=host.id, timeout=rpc.timeout)


async def start_linked(ctl: CtlClient, host: Host, values: dict | None = None) -> tuple[str, str]:
    provider = (await ctl.start_provider(host.id, ECHO, config={"greeting": "hi"})).provider_id
    actor = (await ctl.start_actor(host.id, CALLER)).actor_id
    await ctl.put_link(actor, provider, "test:echo", values=values or {"k": "v"})
    return actor, provider


async def call_until(rpc: RpcClient, subject: str, op: str, message: object, attempts: int = 50) -> object:
    """Retry while the lattice settles (a link or a restarted instance becomes visible)."""
    for attempt in range(attempts):
        try:
            return await rpc.call(subject, op, message, timeout=2)
        except (LinkNotFound, Exception):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)


async def links_until(rpc: RpcClient, subject: str, expected: list[str], timeout: float = 10.0) -> list[str]:
    """The provider's links once they are ``expected``: the host may ask before a link has arrived
    (it is served without a link of its own), and gets the links known so far."""
    async with asyncio.timeout(timeout):
        while (links := await call_until(rpc, subject, "Echo.Links", None)) != expected:
            await asyncio.sleep(0.1)
    assert isinstance(links, list)
    return links


async def test_get_hosts_and_inventory_show_what_runs(ctl, host):
    await start_linked(ctl, host)
    hosts = await ctl.get_hosts()
    assert [h.id for h in hosts] == [host.id]
    assert hosts[0].labels["zone"] == "test" and hosts[0].labels["arch"]
    inventory = await ctl.get_inventory(host.id)
    assert [a.name for a in inventory.actors] == ["caller"]
    assert inventory.actors[0].instances[0].status is InstanceStatus.HEALTHY
    assert [(p.name, p.contract_id, p.link_name) for p in inventory.providers] == [("echo", "test:echo", "default")]


async def test_actor_calls_provider_through_link(ctl, host, rpc, settings):
    actor, _ = await start_linked(ctl, host, values={"model": "m1"})
    subject = subjects.actor_target(settings.lattice, actor)
    answer = await call_until(rpc, subject, "Caller.Relay", {"x": 1})
    assert answer["provider"]["echo"] == {"x": 1}
    assert answer["provider"]["values"] == {"model": "m1"}
    assert answer["provider"]["greeting"] == "hi"
    # The call alias (component name) reaches the same actor.
    by_alias = await rpc.call(subjects.actor_target(settings.lattice, "caller"), "Caller.Relay", {"y": 2})
    assert by_alias["provider"]["echo"] == {"y": 2}


async def test_call_without_link_is_link_not_found(ctl, host, rpc, settings):
    actor = (await ctl.start_actor(host.id, CALLER)).actor_id
    with pytest.raises(LinkNotFound, match="test:echo"):
        await rpc.call(subjects.actor_target(settings.lattice, actor), "Caller.Relay", {})


async def test_unclaimed_capability_is_refused(ctl, host, rpc, settings):
    actor, _ = await start_linked(ctl, host)
    with pytest.raises(CapabilityNotClaimed, match="test:not-claimed"):
        await rpc.call(subjects.actor_target(settings.lattice, actor), "Caller.Unclaimed", {})


async def test_scaling_to_three_spreads_calls(ctl, host, rpc, settings):
    actor, _ = await start_linked(ctl, host)
    await ctl.scale_actor(host.id, actor, 3)
    inventory = await ctl.get_inventory(host.id)
    assert len(inventory.actors[0].instances) == 3
    subject = subjects.actor_target(settings.lattice, actor)
    pids = await asyncio.gather(*(rpc.call(subject, "Caller.Pid", None) for _ in range(90)))
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert len(counts) == 3, counts
    assert min(counts.values()) >= 5, counts
    await ctl.scale_actor(host.id, actor, 1)
    assert len((await ctl.get_inventory(host.id)).actors[0].instances) == 1


async def test_killed_instance_is_restarted_and_calls_succeed_again(ctl, host, rpc, settings):
    actor, _ = await start_linked(ctl, host)
    subject = subjects.actor_target(settings.lattice, actor)
    first_pid = await rpc.call(subject, "Caller.Pid", None)
    os.kill(first_pid, signal.SIGKILL)
    second_pid = await call_until(rpc, subject, "Caller.Pid", None)
    assert second_pid != first_pid
    instance = (await ctl.get_inventory(host.id)).actors[0].instances[0]
    assert instance.restarts == 1


async def test_crashing_handler_restarts_instance_with_event(ctl, host, rpc, settings):
    actor, _ = await start_linked(ctl, host)
    nc = await host_connection(settings)
    events: list[str] = []

    async def collect(msg: Msg) -> None:
        events.append(decode_event(msg.data).name)

    sub = await nc.subscribe(subjects.events(settings.lattice), cb=collect)
    subject = subjects.actor_target(settings.lattice, actor)
    with pytest.raises(RpcTimeout):  # the process dies mid-call, so no answer comes
        await rpc.call(subject, "Caller.Crash", None, timeout=1)
    assert await call_until(rpc, subject, "Caller.Pid", None)
    await asyncio.sleep(0.2)
    assert EventName.HEALTH_CHECK_FAILED in events
    assert EventName.ACTOR_RESTARTED in events
    await sub.unsubscribe()
    await nc.close()


async def test_restarted_provider_gets_its_links_back(ctl, host, rpc, settings):
    actor, provider = await start_linked(ctl, host)
    provider_subject = subjects.provider_target(settings.lattice, "test:echo", provider, "default")
    rpc = as_host(rpc, host)
    await links_until(rpc, provider_subject, [actor])
    pid = (await ctl.get_inventory(host.id)).providers[0].instances[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    await links_until(rpc, provider_subject, [actor])  # the restarted instance replays the links
    answer = await call_until(rpc, subjects.actor_target(settings.lattice, actor), "Caller.Relay", {"after": "restart"})
    assert answer["provider"]["values"] == {"k": "v"}


async def test_links_survive_a_host_restart(settings, rpc):
    async with Host(settings) as first:
        ctl = await CtlClient.connect(settings)
        actor, provider = await start_linked(ctl, first)
        await ctl.close()
    async with Host(settings) as second:
        ctl = await CtlClient.connect(settings)
        assert [(link.actor_id, link.provider_id) for link in await ctl.get_links()] == [(actor, provider)]
        await ctl.start_provider(second.id, ECHO, config={"greeting": "hi"})
        await ctl.start_actor(second.id, CALLER)
        answer = await call_until(rpc, subjects.actor_target(settings.lattice, actor), "Caller.Relay", {})
        assert answer["provider"]["values"] == {"k": "v"}
        await ctl.close()


async def test_link_delete_reaches_provider_and_put_is_idempotent(ctl, host, rpc, settings):
    actor, provider = await start_linked(ctl, host)
    assert (await ctl.put_link(actor, provider, "test:echo", values={"k": "v"})).changed is False
    provider_subject = subjects.provider_target(settings.lattice, "test:echo", provider, "default")
    rpc = as_host(rpc, host)
    await links_until(rpc, provider_subject, [actor])  # so that the delete is what empties it
    await ctl.delete_link(actor, "test:echo")
    await links_until(rpc, provider_subject, [])
    with pytest.raises(NotFound):
        await ctl.delete_link(actor, "test:echo")


async def test_ctl_errors_are_typed(ctl, host):
    with pytest.raises(ComponentNotFound):
        await ctl.stop_actor(host.id, "MNOSUCHACTOR")
    with pytest.raises(Exception, match="component.toml"):
        await ctl.start_actor(host.id, str(COMPONENTS))


def test_local_component_keeps_its_key(settings):
    assert resolve_local(COMPONENTS / "caller", settings).key == resolve_local(COMPONENTS / "caller", settings).key


async def test_crash_looping_actor_is_reported_and_stops_at_once(settings):
    settings = settings.replace(ready_timeout=3.0, restart_backoff=20.0)
    async with Host(settings) as host:
        ctl = await CtlClient.connect(settings)
        with pytest.raises(HostError, match=r"crasher: 1 of 1 new instances not ready .*exit codes \[7\]"):
            await ctl.start_actor(host.id, str(COMPONENTS / "crasher"))
        actor = (await ctl.get_inventory(host.id)).actors[0]
        assert actor.instances[0].status is InstanceStatus.UNHEALTHY
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ctl.stop_actor(host.id, actor.id)  # mid back-off: must not wait it out
        assert loop.time() - started < 5
        await ctl.close()


async def test_a_host_whose_start_fails_part_way_closes_its_nats_connection(settings):
    # A JetStream stream squats the name of the lattice's link bucket: the host connects, then
    # cannot open its links, and must not leave that connection (or anything else) behind.
    nc = await host_connection(settings)
    bucket = subjects.lattice_bucket(settings.lattice)
    await nc.jetstream().add_stream(name=f"KV_{bucket}", subjects=[f"squat.{settings.lattice}"])
    host = Host(settings)
    with pytest.raises(ConfigError, match="not a key-value bucket"):
        await host.start()
    assert host.lifecycle is State.STOPPED
    assert host.nc is not None and host.nc.is_closed
    with pytest.raises(HostError, match="starts only once"):
        await host.start()
    await nc.close()


async def test_a_stopped_host_has_ended_its_background_tasks_and_left_the_lattice(settings, ctl, host):
    tasks = list(host._tasks)
    assert host.lifecycle is State.RUNNING and all(not t.done() for t in tasks)
    await host.stop()
    assert host.lifecycle is State.STOPPED and all(t.done() for t in tasks)
    assert host.nc is not None and host.nc.is_closed
    assert await ctl.get_hosts(wait=0.3) == []
    await host.stop()  # a second stop is a no-op


async def instance_pids(ctl: CtlClient, host: Host) -> list[int]:
    inventory = await ctl.get_inventory(host.id)
    return [i.pid for c in (*inventory.actors, *inventory.providers) for i in c.instances if i.pid]


async def kill_after(pid: int, delay: float) -> float:
    """SIGKILL ``pid`` after ``delay`` seconds; when it was killed (loop time)."""
    await asyncio.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    return asyncio.get_running_loop().time()


@pytest.fixture
async def watching(settings, rpc):
    """The test's RpcClient, hearing of instance deaths, with a retry budget of 3."""
    watching = RpcClient(rpc.nc, caller="test", timeout=8, retries=3)
    await watching.follow_deaths(settings.lattice)
    return watching


async def test_a_call_in_flight_to_a_killed_instance_fails_within_a_second(ctl, host, watching, settings):
    actor, _ = await start_linked(ctl, host)
    subject = subjects.actor_target(settings.lattice, actor)
    pid = await call_until(watching, subject, "Caller.Pid", None)
    call = asyncio.create_task(watching.call(subject, "Caller.Slow", 5.0))  # not idempotent: not made again
    killed = await kill_after(pid, 0.5)
    with pytest.raises(InstanceDied, match="died") as caught:
        await call
    assert caught.value.http_status == 503
    assert asyncio.get_running_loop().time() - killed < 1.0


async def test_an_idempotent_call_to_a_lone_killed_instance_succeeds_after_its_restart(ctl, host, watching, settings):
    actor, _ = await start_linked(ctl, host)
    subject = subjects.actor_target(settings.lattice, actor)
    pid = await call_until(watching, subject, "Caller.Pid", None)
    started = asyncio.get_running_loop().time()
    call = asyncio.create_task(watching.call(subject, "Caller.Slow", 1.0, idempotent=True))
    await kill_after(pid, 0.5)
    assert await call not in (pid, None)  # served by the restarted instance
    assert asyncio.get_running_loop().time() - started < 8


async def test_killing_one_of_two_replicas_fails_no_idempotent_call(ctl, host, watching, settings):
    actor, _ = await start_linked(ctl, host)
    await ctl.scale_actor(host.id, actor, 2)
    subject = subjects.actor_target(settings.lattice, actor)
    await call_until(watching, subject, "Caller.Pid", None)
    victim = (await instance_pids(ctl, host))[0]  # the actor's instances come first
    calls = [asyncio.create_task(watching.call(subject, "Caller.Slow", 1.0, idempotent=True)) for _ in range(16)]
    await kill_after(victim, 0.3)
    pids = await asyncio.gather(*calls)  # none raises
    assert victim not in pids


async def test_an_actor_makes_its_idempotent_call_again_after_the_provider_died_under_it(ctl, host, rpc, settings):
    """The instance's own RpcClient hears of the death (its permissions let it) and retries."""
    actor, _ = await start_linked(ctl, host)
    subject = subjects.actor_target(settings.lattice, actor)
    provider_pid = await call_until(rpc, subject, "Caller.SlowRelay", 0.0)
    started = asyncio.get_running_loop().time()
    call = asyncio.create_task(rpc.call(subject, "Caller.SlowRelay", 1.0, timeout=8))
    await kill_after(provider_pid, 0.5)
    assert await call != provider_pid
    assert asyncio.get_running_loop().time() - started < 8
