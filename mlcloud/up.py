"""``mlcloud up``: the whole system in one foreground process tree.

Starts, in order, the embedded NATS server (unless ``--nats-url``; in operator mode, its keys
and the host's and ctl's credentials kept in ``state_dir/nats-auth``: :mod:`mlcloud.lattice.auth`),
the Bindle server (unless ``--bindle-url``), the OCI registry (unless ``--registry`` names
another), a host, the washboard, then publishes the project's components and deploys the app
manifest. Ctrl-C (or
SIGTERM) stops everything in reverse order; a second Ctrl-C exits at once.

With ``--nats-cluster N`` the embedded NATS is N nodes on loopback forming one JetStream cluster
(:class:`~mlcloud.lattice.nats_server.NatsCluster`); every process gets all their URLs, and the
links bucket is replicated, so any one node may die.

nats-server (each node) and the registry are child processes, supervised (:mod:`mlcloud.server_supervisor`):
one that dies is started again on the same port and data dir, its clients reconnect, and the host
publishes a ``server_restarted`` event once its NATS connection is back. The Bindle server runs
inside this process, so it ends only with ``mlcloud up`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlcloud.host.host import Host
from mlcloud.identity import KeyKind, load_or_create
from mlcloud.lattice.auth import NatsAuth, auth_dir
from mlcloud.lattice.control import EventName, ServerRestarted
from mlcloud.lattice.nats_server import NatsCluster, NatsServer
from mlcloud.server_supervisor import ServerSupervisor
from mlcloud.servers import running_app, wait_for_stop_signal
from mlcloud.settings import Settings

log = logging.getLogger(__name__)

EVENT_AFTER_RESTART_WITHIN = 10.0  # seconds the host's connection has to come back to publish server_restarted


@dataclass
class UpOptions:
    labels: dict[str, str] = field(default_factory=dict)
    app: Path | None = None
    start_registry: bool = True
    start_washboard: bool = True
    models_dir: Path | None = Path("models/build")  # bundles pushed to Bindle before deploying
    nats_cluster: int = 1  # nodes of the embedded NATS: 1 a single server, more a JetStream cluster


async def up(settings: Settings, options: UpOptions, say: Callable[[str], None] = print) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    hosts: list[Host] = []  # the host, once started: it publishes the restarts of the servers

    async def announce(restart: ServerRestarted) -> None:
        if hosts:
            await publish_restart(hosts[0], restart)

    async with contextlib.AsyncExitStack() as stack:
        auth = NatsAuth.load_or_create(auth_dir(settings))
        host_creds, ctl_creds = auth.write_creds()
        # The host connects as a host and signs its instances' credentials; the washboard and the
        # deploy below connect as ctl. A server named by --nats-url must trust this state dir's
        # operator (`mlcloud nats-config`, as deploy/run.sh's hub does) or take no credentials.
        host_settings = settings.replace(nats_creds=settings.nats_creds or host_creds,
                                         nats_account_seed=settings.nats_account_seed or auth.account_seed_path)
        settings = settings.replace(nats_creds=settings.nats_creds or ctl_creds)
        if settings.nats_url is None and options.nats_cluster > 1:
            cluster = await stack.enter_async_context(NatsCluster(
                settings.state_dir / "nats-cluster", size=options.nats_cluster, name=settings.lattice,
                port=settings.nats_port, max_payload=settings.nats_max_payload, auth=auth))
            for i, node in enumerate(cluster.nodes):
                await stack.enter_async_context(ServerSupervisor(f"nats-server-{i}", node, announce))
            # Every process connects with all the nodes' URLs, so it moves on when its node dies.
            host_settings = host_settings.replace(nats_url=cluster.url)
            settings = settings.replace(nats_url=cluster.url)
            say(f"NATS (JetStream)   cluster {cluster.name!r} of {len(cluster.nodes)}: {cluster.url}   "
                f"(credentials in {auth.directory})")
        elif settings.nats_url is None:
            nats = NatsServer(
                settings.state_dir / "nats", port=settings.nats_port, max_payload=settings.nats_max_payload,
                auth=auth,
            )
            await stack.enter_async_context(nats)
            await stack.enter_async_context(ServerSupervisor("nats-server", nats, announce))
            say(f"NATS (JetStream)   {nats.url}   (credentials in {auth.directory})")
        if settings.bindle_url is None:
            from mlcloud.bindle.server import create_app

            directory = settings.state_dir / "bindle"
            address = await stack.enter_async_context(
                running_app(create_app(directory), settings.bindle_address, "the Bindle server", access_log=None)
            )
            say(f"Bindle             http://{address}/v1   (data in {directory})")
        if options.start_registry:
            from mlcloud.oci import EmbeddedRegistry

            registry = await stack.enter_async_context(EmbeddedRegistry.from_settings(settings))
            await stack.enter_async_context(ServerSupervisor("registry", registry, announce))
            say(f"OCI registry       {registry.url}")
        host_key = load_or_create(settings.state_dir / "host.nk", KeyKind.HOST)
        host = await stack.enter_async_context(Host(host_settings, options.labels, key=host_key))
        hosts.append(host)
        say(f"host               {host.id}  labels {host.labels}")
        if options.start_washboard:
            from mlcloud.washboard.access import announcement, load_or_create_token
            from mlcloud.washboard.app import create_washboard

            token = load_or_create_token(settings.state_dir)
            address = await stack.enter_async_context(running_app(
                create_washboard(settings, token=token), settings.washboard_address, "the washboard", access_log=None))
            say(f"washboard          {announcement(address, token, settings.state_dir, terminal=sys.stdout.isatty())}")
        if options.app is not None:
            await deploy_app(settings, options.app, say, options.models_dir)
        say("mlcloud is up. Ctrl-C stops it.")
        await wait_for_stop_signal()


async def publish_restart(host: Host, restart: ServerRestarted) -> None:
    """Publish ``server_restarted`` as ``host`` once its NATS connection is back (after a while, give up)."""
    try:
        async with asyncio.timeout(EVENT_AFTER_RESTART_WITHIN):
            while host.nc is None or not host.nc.is_connected:
                await asyncio.sleep(0.05)
    except TimeoutError:
        log.warning("%s restarted, but the host's NATS connection is not back: no event", restart.server)
        return
    if host.events is not None:
        await host.events.publish(EventName.SERVER_RESTARTED, restart)


async def deploy_app(
    settings: Settings,
    manifest_path: Path,
    say: Callable[[str], None],
    models_dir: Path | None = None,
    project_dir: Path | None = None,
) -> list[str]:
    """Push built models to Bindle, publish the project's own components, then deploy.

    ``${MLCLOUD_…}`` in the manifest sees these settings (flags included), then the environment.
    """
    from mlcloud.app import AppManifest, deploy
    from mlcloud.lattice.ctl_client import CtlClient
    from mlcloud.publish import publish_manifest_components, push_models

    manifest = AppManifest.load(manifest_path, {**os.environ, **settings.to_env()})
    if models_dir is not None and models_dir.is_dir():
        await push_models(settings, models_dir, say)
    await publish_manifest_components(manifest, settings, say, project_dir)
    async with await CtlClient.connect(settings) as ctl:
        changes = await deploy(manifest, ctl, settings, report=say)
    say(f"app {manifest.name}: {len(changes)} change(s)" if changes else f"app {manifest.name}: up to date")
    return changes
