"""The NATS of docs/deploy.md's three-machine layout, on one machine: three nats-servers, each
configured with its own server_name, listen and jetstream lines plus what `mlcloud nats-config
--route …` prints (the same route list at every node, its own included), form one JetStream
cluster in operator mode that holds the links bucket three times."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from mlcloud.lattice.auth import Credentials, NatsAuth
from mlcloud.lattice.connect import connect, leave
from mlcloud.lattice.links import LinkStore, open_links
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.servers import free_port

from .conftest import clean_environ, mlcloud_bin


async def test_nodes_configured_by_nats_config_form_a_cluster_that_replicates_the_links(tmp_path: Path) -> None:
    state = tmp_path / "machine-a"  # the state dir of the machine that runs `mlcloud up`
    NatsAuth.load_or_create(state / "nats-auth").write_creds()
    route_ports = [free_port() for _ in range(3)]
    routes = [arg for port in route_ports for arg in ("--route", f"nats-route://127.0.0.1:{port}")]
    env = {**clean_environ(), "MLCLOUD_STATE_DIR": str(state), "MLCLOUD_LATTICE": "three"}
    nodes = []
    for i, port in enumerate(route_ports):
        lines = subprocess.run([mlcloud_bin(), "nats-config", "--cluster-listen", f"127.0.0.1:{port}", *routes],
                               env=env, check=True, capture_output=True, text=True, timeout=60).stdout
        assert 'name: "three"' in lines
        own = f'server_name: "machine-{i}"\n'
        nodes.append(NatsServer(tmp_path / f"machine-{i}", port=0, extra_config=own + lines))
    await asyncio.gather(*(node.start() for node in nodes))
    connections = []
    try:
        await asyncio.wait_for(asyncio.gather(*(node.meta_leader_known.wait() for node in nodes)), 30)
        host = Credentials.load(state / "nats-auth" / "host.creds")
        for node in nodes:  # a host on each machine, connected to its own node first
            connections.append(await connect(",".join([node.url] + [n.url for n in nodes if n is not node]),
                                             name="host", credentials=host))
        store = await open_links(connections[0], "three")
        assert isinstance(store, LinkStore)
        info = await store.js.stream_info(f"KV_{store.bucket}")
        assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.name == "three"
    finally:
        for nc in connections:
            await leave(nc, "host")
        await asyncio.gather(*(node.stop() for node in nodes))
