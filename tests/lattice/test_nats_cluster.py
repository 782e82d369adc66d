"""A NATS cluster of three nodes on loopback: any one node may die and the lattice loses no link.

Real nodes (``NatsCluster``, operator mode), each supervised as ``mlcloud up --nats-cluster 3``
does. Killing the node that holds both a client's connection and the links bucket's leader is the
hardest case: the client must move to another node and JetStream must elect a new leader.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mlcloud.errors import MLCloudError
from mlcloud.experiments import make_buckets
from mlcloud.lattice import subjects
from mlcloud.lattice.auth import Credentials, NatsAuth
from mlcloud.lattice.connect import connect, leave
from mlcloud.lattice.control import LinkDefinition, ServerRestarted
from mlcloud.lattice.links import LinkStore, link_replicas, open_links
from mlcloud.lattice.nats_server import NatsCluster
from mlcloud.server_supervisor import ServerSupervisor

# JetStream elects a new stream leader within its election timeout (4-9 s in nats-server): the
# bound for link writes after the leader's node dies. Core NATS (RPC) must be back far sooner.
NEW_LEADER_WITHIN = 20.0
SERVED_AGAIN_WITHIN = 5.0
# The supervisors here wait this long before a restart (mlcloud up's wait 0.1 s): a client served
# again sooner has moved to another node, not back to its own.
NODE_DOWN_FOR = SERVED_AGAIN_WITHIN + 1.0


@pytest.fixture
async def cluster(tmp_path: Path, nats_auth: NatsAuth) -> AsyncIterator[tuple[NatsCluster, list[ServerRestarted]]]:
    restarts: list[ServerRestarted] = []

    async def on_restart(restart: ServerRestarted) -> None:
        restarts.append(restart)

    async with NatsCluster(tmp_path / "cluster", size=3, name="test", port=0, auth=nats_auth) as cluster:
        supervisors = [ServerSupervisor(f"nats-server-{i}", node, on_restart, backoff=NODE_DOWN_FOR)
                       for i, node in enumerate(cluster.nodes)]
        for supervisor in supervisors:
            await supervisor.__aenter__()
        try:
            yield cluster, restarts
        finally:
            for supervisor in supervisors:
                await supervisor.__aexit__(None, None, None)


def link(i: int) -> LinkDefinition:
    return LinkDefinition(actor_id=f"MACTOR{i}", provider_id="VPROVIDER", contract_id="test:echo",
                          values={"n": str(i)})


async def until(what: str, within: float, since: float, attempt):  # type: ignore[no-untyped-def]
    """``await attempt()`` again until it returns without a lattice error; fail after ``within`` s."""
    while True:
        try:
            return await attempt()
        except (MLCloudError, nats.errors.Error):
            assert time.monotonic() - since < within, f"{what}: not within {within} s"
            await asyncio.sleep(0.1)


def node_of(nc: NATS, cluster: NatsCluster) -> int:
    assert nc.connected_url is not None
    return [node.port for node in cluster.nodes].index(nc.connected_url.port)


async def test_a_cluster_forms_and_the_links_bucket_has_three_replicas(
    cluster: tuple[NatsCluster, list[ServerRestarted]], host_creds: Credentials
) -> None:
    nodes, _ = cluster
    assert len({node.port for node in nodes.nodes}) == 3 and nodes.url.count("nats://") == 3
    nc = await connect(nodes.url, name="test", credentials=host_creds)
    try:
        assert link_replicas(nc) == 3
        store = await open_links(nc, "formed")
        assert isinstance(store, LinkStore)
        info = await store.js.stream_info(f"KV_{store.bucket}")
        assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.name == "test"
        assert {peer.name for peer in info.cluster.replicas or []} | {info.cluster.leader} == {
            "test-0", "test-1", "test-2"}
        await make_buckets(store.js, "formed", link_replicas(nc))  # as a host does: the experiments' too
        for bucket in (subjects.experiment_bucket("formed"), subjects.assignment_bucket("formed")):
            assert (await store.js.stream_info(f"KV_{bucket}")).config.num_replicas == 3
    finally:
        await leave(nc, "test")


async def test_a_host_raises_the_replicas_of_a_bucket_made_on_one_node(
    cluster: tuple[NatsCluster, list[ServerRestarted]], host_creds: Credentials
) -> None:
    nodes, _ = cluster
    nc = await connect(nodes.url, name="test", credentials=host_creds)
    try:
        bucket = subjects.lattice_bucket("grown")
        kv = await nc.jetstream().create_key_value(bucket=bucket, history=1, replicas=1)
        key = f"linkdefs.{link(1).actor_id}.x.default"
        await until("a key written", 2.0, time.monotonic(), lambda: kv.put(key, b"{}"))
        await open_links(nc, "grown")
        info = await nc.jetstream().stream_info(f"KV_{bucket}")
        assert info.config.num_replicas == 3 and info.state.messages == 1
    finally:
        await leave(nc, "test")


async def test_killing_the_node_of_a_client_and_the_links_leader_loses_nothing(
    cluster: tuple[NatsCluster, list[ServerRestarted]], host_creds: Credentials
) -> None:
    nodes, restarts = cluster
    caller = await connect(nodes.url, name="caller", credentials=host_creds)
    responders: list[NATS] = []
    try:
        store = await open_links(caller, "killed")
        assert isinstance(store, LinkStore)
        written = [link(i) for i in range(20)]
        # A new stream's subjects reach the other nodes' interest a moment after it is made.
        await until("the first link written", 2.0, time.monotonic(), lambda: store.put(written[0]))
        for each in written[1:]:
            await store.put(each)
        info = await store.js.stream_info(f"KV_{store.bucket}")
        assert info.cluster is not None and info.cluster.leader is not None
        doomed = int(info.cluster.leader.rpartition("-")[2])
        while not responders or node_of(responders[-1], nodes) != doomed:  # the client on the leader's node
            responders.append(await connect(nodes.url, name="responder", credentials=host_creds))
        responder = responders[-1]

        async def echo(msg: Msg) -> None:
            await responder.publish(msg.reply, msg.data)

        async def rpc() -> bytes:
            return (await caller.request("echo", b"ping", timeout=0.5)).data

        await responder.subscribe("echo", cb=echo)
        # The subscription's interest reaches the caller's node over a route a moment later.
        assert await until("the responder is heard", 2.0, time.monotonic(), rpc) == b"ping"

        pid = nodes.nodes[doomed].pid
        assert pid is not None
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        assert await until("an RPC answered", SERVED_AGAIN_WITHIN, killed, rpc) == b"ping"
        served = time.monotonic() - killed
        assert node_of(responder, nodes) != doomed  # it moved to another node
        assert await until("every link read", NEW_LEADER_WITHIN, killed, store.all) == sorted(
            written, key=lambda each: each.actor_id)
        await until("a new link written", NEW_LEADER_WITHIN, killed, lambda: store.put(link(20)))
        written_again = time.monotonic() - killed
        print(f"served again {served:.2f} s after the kill, a link written after {written_again:.2f} s")

        # The supervised node is back on its port and catches up with the link written without it.
        while not restarts:
            assert time.monotonic() - killed < NODE_DOWN_FOR + 5, "the node was not restarted"
            await asyncio.sleep(0.1)
        assert [(r.server, r.exit_code, r.url) for r in restarts] == [
            (f"nats-server-{doomed}", -signal.SIGKILL, nodes.urls[doomed])]
        while True:
            info = await store.js.stream_info(f"KV_{store.bucket}")
            assert info.cluster is not None
            peers = {peer.name: peer.current for peer in info.cluster.replicas or []}
            if len(peers) == 2 and all(peers.values()) and info.cluster.leader:
                break
            assert time.monotonic() - killed < NEW_LEADER_WITHIN + 10, f"the node did not rejoin: {info.cluster}"
            await asyncio.sleep(0.2)
        assert info.state.messages == 21
    finally:
        for nc in (caller, *responders):
            await leave(nc, "test")
