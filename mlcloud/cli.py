"""The ``mlcloud`` command: start the system, drive the lattice, manage models and artifacts.

Human-readable tables by default, ``--json`` for scripts. Every command reads the same
settings (flags override ``MLCLOUD_*`` environment variables). Errors print one clear line and
exit non-zero; no tracebacks for errors mlcloud raised on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from mlcloud.errors import MLCloudError, RequestError
from mlcloud.settings import Settings

if TYPE_CHECKING:
    from mlcloud.interfaces import RepositoryModel
    from mlcloud.lattice.control import ComponentInfo
    from mlcloud.lattice.ctl_client import CtlClient


def run_async(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async click command, turning mlcloud errors into one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except MLCloudError as err:
            raise click.ClickException(f"{err.kind}: {err.message}") from err

    return wrapper


def parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{what} must look like key=value, got {pair!r}")
        values[key] = value
    return values


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def joined(pairs: dict[str, Any]) -> str:
    """``{"arch": "x86_64", "os": "linux"}`` → ``arch=x86_64,os=linux`` for a table cell."""
    return ",".join(f"{k}={v}" for k, v in sorted(pairs.items()))


def emit(data: Any, as_json: bool, table: Callable[[], None]) -> None:
    """``data`` (control-plane structs) as JSON, or ``table``."""
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=True))
    else:
        table()


settings_options = [
    click.option("--nats-url", envvar="MLCLOUD_NATS_URL",
                 help="Use this NATS server instead of the embedded one (a cluster's nodes: comma-separated URLs)."),
    click.option("--nats-creds", type=click.Path(dir_okay=False, path_type=Path), envvar="MLCLOUD_NATS_CREDS",
                 help="NATS credentials (.creds) to connect with (default: the state dir's, from `mlcloud up`)."),
    click.option("--lattice", envvar="MLCLOUD_LATTICE", help="Lattice name (default: default)."),
    click.option("--rpc-timeout", type=float, envvar="MLCLOUD_RPC_TIMEOUT",
                 help="Seconds an RPC may take (default 8)."),
]


def with_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(settings_options):
        fn = option(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, nats_url: str | None, nats_creds: Path | None, lattice: str | None,
                rpc_timeout: float | None, **kwargs: Any) -> Any:
        settings = Settings.from_env(nats_url=nats_url, nats_creds=nats_creds, lattice=lattice, rpc_timeout=rpc_timeout)
        return fn(*args, settings=settings, **kwargs)

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="mlcloud")
def main(verbose: bool) -> None:
    """mlcloud: ML inference as a lattice of actors and capability providers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL if not verbose else logging.DEBUG)
    # One line per HTTP request to Bindle or the registry is noise unless asked for.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)


# ---- up / host -----------------------------------------------------------------------------


dev_option = click.option(
    "--dev", is_flag=True,
    help="Development mode: the host also runs unsigned local component folders (MLCLOUD_DEV=1).",
)


@main.command()
@with_settings
@click.option("--nats-port", type=int, help="Port of the embedded NATS server (default 4222).")
@click.option("--nats-cluster", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the embedded NATS as a JetStream cluster of this many nodes on loopback "
                   "(ports --nats-port and up); with 3 or more, any one node may die.")
@click.option("--bindle-url", help="Use this Bindle server instead of the embedded one.")
@click.option("--registry", help="Use this OCI registry (host:port) instead of the embedded one.")
@click.option("--label", "labels", multiple=True, help="Host label key=value (repeatable).")
@click.option("--app", "app_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="App manifest to deploy.")
@click.option("--no-washboard", is_flag=True, help="Do not serve the washboard.")
@dev_option
@run_async
async def up(settings: Settings, nats_port: int | None, nats_cluster: int, bindle_url: str | None,
             registry: str | None, labels: tuple[str, ...], app_path: Path | None, no_washboard: bool,
             dev: bool) -> None:
    """Start NATS, Bindle, the registry, a host and the washboard; deploy --app; run until Ctrl-C."""
    from mlcloud.up import UpOptions, up as run_up

    if nats_cluster > 1 and settings.nats_url is not None:
        raise click.UsageError("--nats-cluster starts an embedded NATS cluster; --nats-url names one to use instead")
    settings = settings.replace(**{k: v for k, v in {"nats_port": nats_port, "bindle_url": bindle_url,
                                                     "registry": registry, "dev": dev or None}.items()
                                   if v is not None})
    options = UpOptions(labels=parse_pairs(labels, "--label"), app=app_path,
                        start_registry=registry is None, start_washboard=not no_washboard, nats_cluster=nats_cluster)
    await run_up(settings, options)


@main.command("nats-config")
@with_settings
@click.option("--route", "routes", multiple=True, metavar="nats-route://HOST:PORT",
              help="Make the server a node of a JetStream cluster named after the lattice, routed to this "
                   "node (repeatable: every node, this one included; each node gets the same list).")
@click.option("--cluster-listen", default="0.0.0.0:6222", show_default=True, metavar="HOST:PORT",
              help="With --route: where the node takes the other nodes' routes.")
def nats_config(settings: Settings, routes: tuple[str, ...], cluster_listen: str) -> None:
    """Print the nats-server config lines that make a server of your own trust this state dir's
    lattice account (operator mode; keys made on first use, as `mlcloud up` does), and with
    --route join a cluster of such servers (docs/deploy.md). Each server also needs its own
    server_name, listen and jetstream lines."""
    from mlcloud.lattice.auth import NatsAuth, auth_dir
    from mlcloud.lattice.nats_server import cluster_config

    click.echo(NatsAuth.load_or_create(auth_dir(settings)).server_config(), nl=False)
    if routes:
        click.echo(cluster_config(settings.lattice, cluster_listen, routes), nl=False)


@main.command("nats-creds")
@with_settings
@click.argument("board")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write (default ./BOARD-nats-auth); made 0700, each file 0600.")
def nats_creds(settings: Settings, board: str, out: Path | None) -> None:
    """Write BOARD's NATS secrets for `deploy/coral/install.sh --nats-auth FOLDER`: its host's
    credentials, the lattice account seed (to mint its instances'), its leaf node's credentials and
    the leaf server's operator-mode lines. Copy the folder to the board privately, then delete it."""
    from mlcloud.lattice.auth import NatsAuth, auth_dir

    try:
        paths = NatsAuth.load_or_create(auth_dir(settings)).write_board(board, out or Path(f"{board}-nats-auth"))
    except MLCloudError as err:
        raise click.ClickException(f"{err.kind}: {err.message}") from err
    for path in paths:
        click.echo(path)


@main.command("host")
@with_settings
@click.option("--label", "labels", multiple=True, help="Host label key=value (repeatable).")
@click.option("--key-file", type=click.Path(path_type=Path), help="Keep the host's nkey here (stable host id).")
@dev_option
@click.option("--nats-account-seed", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="MLCLOUD_NATS_ACCOUNT_SEED",
              help="The lattice account's seed, to sign the instances' NATS credentials "
                   "(default: the state dir's nats-auth/account.nk).")
@run_async
async def host_command(settings: Settings, labels: tuple[str, ...], key_file: Path | None, dev: bool,
                       nats_account_seed: Path | None) -> None:
    """Run one host that joins an existing lattice (--nats-url, --nats-creds with a host's rights), until Ctrl-C."""
    from mlcloud.host.host import Host
    from mlcloud.identity import KeyKind, load_or_create
    from mlcloud.servers import wait_for_stop_signal

    if dev:
        settings = settings.replace(dev=True)
    key = load_or_create(key_file, KeyKind.HOST) if key_file else None
    if nats_account_seed is not None:
        settings = settings.replace(nats_account_seed=nats_account_seed)
    async with Host(settings, parse_pairs(labels, "--label"), key=key) as host:
        click.echo(f"host {host.id} joined lattice {settings.lattice!r} at {settings.effective_nats_url}")
        click.echo(f"labels {host.labels}")
        stopper = asyncio.ensure_future(wait_for_stop_signal())
        await asyncio.wait([stopper, asyncio.ensure_future(host.wait_stopped())], return_when=asyncio.FIRST_COMPLETED)


# ---- ctl -----------------------------------------------------------------------------------


@main.group()
def ctl() -> None:
    """Drive the lattice's control interface."""


async def _connect(settings: Settings) -> CtlClient:
    from mlcloud.lattice.ctl_client import CtlClient

    return await CtlClient.connect(settings)


async def _pick_host(ctl_client: CtlClient, host: str | None) -> str:
    hosts = await ctl_client.get_hosts()
    if host:
        matches = [h.id for h in hosts if h.id.startswith(host)]
        if len(matches) != 1:
            raise RequestError(f"{len(matches)} hosts match {host!r}")
        return matches[0]
    if len(hosts) != 1:
        raise RequestError(f"{len(hosts)} hosts on the lattice: choose one with --host")
    return hosts[0].id


async def _find_component(ctl_client: CtlClient, name_or_id: str, kind: str) -> tuple[str, ComponentInfo]:
    """(host id, component) of an actor or provider (``kind``: actors or providers) named by key, name or image ref."""
    for inventory in await ctl_client.get_inventories():
        for item in inventory.actors if kind == "actors" else inventory.providers:
            if name_or_id in (item.id, item.name, item.image_ref):
                return inventory.host_id, item
    raise RequestError(f"no {kind[:-1]} {name_or_id!r} runs on the lattice")


async def _component_id(ctl_client: CtlClient, name_or_id: str, kind: str) -> str:
    """A public key as given, or the key of the running component with that name or ref."""
    from mlcloud.identity import kind_of

    try:
        kind_of(name_or_id)
        return name_or_id
    except MLCloudError:
        return (await _find_component(ctl_client, name_or_id, kind))[1].id


@ctl.group("get")
def ctl_get() -> None:
    """Show hosts, inventories or links."""


@ctl_get.command("hosts")
@with_settings
@click.option("--json", "as_json", is_flag=True)
@run_async
async def get_hosts(settings: Settings, as_json: bool) -> None:
    async with await _connect(settings) as c:
        hosts = await c.get_hosts()
    rows = [{**msgspec.to_builtins(h), "labels": joined(h.labels), "uptime": f"{h.uptime_seconds:.0f}s"} for h in hosts]
    emit(hosts, as_json, lambda: print_table(rows, ["id", "labels", "uptime", "actors", "providers", "version"]))


@ctl_get.command("inventory")
@with_settings
@click.argument("host", required=False)
@click.option("--json", "as_json", is_flag=True)
@run_async
async def get_inventory(settings: Settings, host: str | None, as_json: bool) -> None:
    from mlcloud.masking import mask_values

    async with await _connect(settings) as c:
        inventories = [await c.get_inventory(await _pick_host(c, host))] if host else await c.get_inventories()
    inventories = [msgspec.structs.replace(inv, providers=[msgspec.structs.replace(p, config=mask_values(p.config))
                                                           for p in inv.providers]) for inv in inventories]

    def table() -> None:
        for inv in inventories:
            click.echo(f"host {inv.host_id}  ({joined(inv.labels)}, up {inv.uptime_seconds:.0f}s)")
            components: list[tuple[str, ComponentInfo, str]] = [("actor", a, a.name) for a in inv.actors]
            components += [("provider", p, f"{p.name} ({p.link_name})") for p in inv.providers]
            rows = [{"kind": kind, "name": name, "id": c.id, "instances": len(c.instances),
                     "status": ",".join(sorted({i.status for i in c.instances})), "image": c.image_ref}
                    for kind, c, name in components]
            print_table(rows, ["kind", "name", "id", "instances", "status", "image"])
            click.echo()

    emit(inventories, as_json, table)


@ctl_get.command("links")
@with_settings
@click.option("--json", "as_json", is_flag=True)
@run_async
async def get_links(settings: Settings, as_json: bool) -> None:
    from mlcloud.masking import mask_values

    async with await _connect(settings) as c:
        links = [msgspec.structs.replace(link, values=mask_values(link.values)) for link in await c.get_links()]
    rows = [{**msgspec.to_builtins(link), "values": joined(link.values)} for link in links]
    emit(links, as_json, lambda: print_table(rows, ["actor_id", "provider_id", "contract_id", "link_name", "values"]))


@ctl.group("start")
def ctl_start() -> None:
    """Start an actor or a provider on a host."""


@ctl_start.command("actor")
@with_settings
@click.argument("ref")
@click.option("--count", type=int, default=1, show_default=True)
@click.option("--host", help="Host id (or a prefix); needed when several hosts run.")
@run_async
async def start_actor(settings: Settings, ref: str, count: int, host: str | None) -> None:
    async with await _connect(settings) as c:
        reply = await c.start_actor(await _pick_host(c, host), ref, count)
    click.echo(f"actor {reply.actor_id} now has {reply.instances} instance(s)")


@ctl_start.command("provider")
@with_settings
@click.argument("ref")
@click.option("--link-name", default="default", show_default=True)
@click.option("--config", "config_json", default="{}", help="Provider configuration as a JSON object.")
@click.option("--host", help="Host id (or a prefix); needed when several hosts run.")
@run_async
async def start_provider(settings: Settings, ref: str, link_name: str, config_json: str, host: str | None) -> None:
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"--config is not JSON: {exc}") from exc
    async with await _connect(settings) as c:
        reply = await c.start_provider(await _pick_host(c, host), ref, link_name, config)
    click.echo(f"provider {reply.provider_id} ({reply.link_name}) started")


@ctl.command("scale")
@with_settings
@click.argument("kind", type=click.Choice(["actor"]))
@click.argument("actor")
@click.argument("count", type=int)
@run_async
async def scale(settings: Settings, kind: str, actor: str, count: int) -> None:
    """Set the number of instances of ACTOR (key, name or image ref)."""
    async with await _connect(settings) as c:
        host_id, item = await _find_component(c, actor, "actors")
        await c.scale_actor(host_id, item.id, count)
    click.echo(f"actor {item.name} scaled to {count} on host {host_id[:8]}")


@ctl.command("stop")
@with_settings
@click.argument("kind", type=click.Choice(["actor", "provider", "host"]))
@click.argument("target")
@click.option("--link-name", default="default", show_default=True)
@run_async
async def stop(settings: Settings, kind: str, target: str, link_name: str) -> None:
    """Stop an actor, a provider (key, name or image ref) or a host (id or prefix)."""
    async with await _connect(settings) as c:
        if kind == "host":
            host_id = await _pick_host(c, target)
            await c.stop_host(host_id)
            click.echo(f"host {host_id} stopping")
            return
        host_id, item = await _find_component(c, target, kind + "s")
        if kind == "actor":
            await c.stop_actor(host_id, item.id)
        else:
            await c.stop_provider(host_id, item.id, link_name)
    click.echo(f"{kind} {item.name} stopped on host {host_id[:8]}")


@ctl.group("link")
def ctl_link() -> None:
    """Put or delete link definitions."""


@ctl_link.command("put")
@with_settings
@click.argument("actor")
@click.argument("provider")
@click.argument("contract")
@click.argument("values", nargs=-1)
@click.option("--link-name", default="default", show_default=True)
@run_async
async def link_put(settings: Settings, actor: str, provider: str, contract: str, values: tuple[str, ...],
                   link_name: str) -> None:
    """Link ACTOR to PROVIDER for CONTRACT with key=value VALUES (names, keys or refs)."""
    async with await _connect(settings) as c:
        actor_id = await _component_id(c, actor, "actors")
        provider_id = await _component_id(c, provider, "providers")
        reply = await c.put_link(actor_id, provider_id, contract, link_name, parse_pairs(values, "a link value"))
    click.echo("link set" if reply.changed else "link unchanged")


@ctl_link.command("del")
@with_settings
@click.argument("actor")
@click.argument("contract")
@click.option("--link-name", default="default", show_default=True)
@run_async
async def link_del(settings: Settings, actor: str, contract: str, link_name: str) -> None:
    async with await _connect(settings) as c:
        actor_id = await _component_id(c, actor, "actors")
        await c.delete_link(actor_id, contract, link_name)
    click.echo("link deleted")


@ctl.group("model")
def ctl_model() -> None:
    """The model repository: what the mlinference provider can serve; load and unload routes.

    The same operations as the Open Inference Protocol's /v2/repository, asked by the host that runs
    the provider. A load or unload holds until the link's value for that route changes.
    """


actor_option = click.option("--actor", help="The linked actor (key or name); needed when several link to mlinference.")


async def _repository(settings: Settings, actor: str | None, op: str, model: str = "",
                      bindle_id: str = "") -> list[RepositoryModel]:
    from mlcloud.interfaces import MLINFERENCE
    from mlcloud.lattice.control import RepositoryCommand, RepositoryOp

    async with await _connect(settings) as c:
        links = [link for link in await c.get_links() if link.contract_id == MLINFERENCE]
        if actor:
            actor_id = await _component_id(c, actor, "actors")
            links = [link for link in links if link.actor_id == actor_id]
        if len(links) != 1:
            which = f" of {actor}" if actor else ""
            raise RequestError(f"{len(links)} mlinference links{which}: choose one with --actor")
        link = links[0]
        host_id, _ = await _find_component(c, link.provider_id, "providers")
        command = RepositoryCommand(op=RepositoryOp(op), actor_id=link.actor_id, provider_id=link.provider_id,
                                    link_name=link.link_name, model=model, bindle_id=bindle_id)
        return await c.model_repository(host_id, command)


def _repository_rows(models: list[RepositoryModel]) -> list[dict[str, Any]]:
    return [{"name": m.name, "bindle": m.bindle_id, "state": m.state or "UNAVAILABLE", "reason": m.reason}
            for m in models]


@ctl_model.command("index")
@with_settings
@actor_option
@click.option("--json", "as_json", is_flag=True)
@run_async
async def model_index(settings: Settings, actor: str | None, as_json: bool) -> None:
    """Every route with its bindle and state, then every bindle no route serves."""
    models = await _repository(settings, actor, "index")
    emit(models, as_json, lambda: print_table(_repository_rows(models), ["name", "bindle", "state", "reason"]))


@ctl_model.command("load")
@with_settings
@actor_option
@click.argument("model")
@click.option("--bindle", "bindle_id", default="", help="Serve MODEL with this bindle (name/version), swapped in live.")
@run_async
async def model_load(settings: Settings, actor: str | None, model: str, bindle_id: str) -> None:
    """Serve the route MODEL (its link's bindle, --bindle, or the newest bindle named MODEL) once it is READY."""
    [done] = await _repository(settings, actor, "load", model, bindle_id)
    click.echo(f"{done.name} serves {done.bindle_id}")


@ctl_model.command("unload")
@with_settings
@actor_option
@click.argument("model")
@run_async
async def model_unload(settings: Settings, actor: str | None, model: str) -> None:
    """Stop serving the route MODEL."""
    [done] = await _repository(settings, actor, "unload", model)
    click.echo(f"{done.name} ({done.bindle_id}) unloaded")


# ---- app -----------------------------------------------------------------------------------


@main.group()
def app() -> None:
    """Deploy wadm-style application manifests."""


@app.command("deploy")
@with_settings
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@run_async
async def app_deploy(settings: Settings, manifest: Path) -> None:
    """Reconcile MANIFEST onto the lattice; deploying twice changes nothing."""
    from mlcloud.up import deploy_app

    started = time.monotonic()
    await deploy_app(settings, manifest, click.echo)
    click.echo(f"done in {time.monotonic() - started:.1f} s")


# ---- trust ---------------------------------------------------------------------------------


@main.group()
def trust() -> None:
    """Which signers' artifacts hosts run: the local account, the trust file, MLCLOUD_TRUSTED_ISSUERS."""


def one_line_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """:func:`run_async`'s error handling for a command that does no I/O on the lattice."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except MLCloudError as err:
            raise click.ClickException(f"{err.kind}: {err.message}") from err

    return wrapper


@trust.command("list")
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def trust_list(as_json: bool) -> None:
    """Every trusted account key and where its trust comes from."""
    from mlcloud import trust as trusting

    settings = Settings.from_env()
    local = trusting.local_account(settings)
    rows = ([{"key": local, "source": "local account"}] if local else [])
    rows += [{"key": k, "source": f"trust file {trusting.trust_file(settings)}"} for k in trusting.added_keys(settings)]
    rows += [{"key": k, "source": "MLCLOUD_TRUSTED_ISSUERS"} for k in trusting.configured_keys(settings)]
    emit(rows, as_json, lambda: print_table(rows, ["key", "source"]))


@trust.command("add")
@click.argument("key")
@one_line_errors
def trust_add(key: str) -> None:
    """Run artifacts signed by account KEY (A…, as `mlcloud keys` prints it on the signer's machine)."""
    from mlcloud import trust as trusting

    settings = Settings.from_env()
    changed = trusting.add(settings, key)
    click.echo(f"{'trusted' if changed else 'already trusted'}: {key.strip()} ({trusting.trust_file(settings)})")


@trust.command("remove")
@click.argument("key")
@one_line_errors
def trust_remove(key: str) -> None:
    """Stop trusting account KEY (hosts refuse its artifacts from their next start on)."""
    from mlcloud import trust as trusting

    settings = Settings.from_env()
    if not trusting.remove(settings, key):
        if key.strip() == trusting.local_account(settings):
            raise RequestError(f"{key.strip()} is this machine's own signing account, which is always trusted")
        raise RequestError(f"{key.strip()} is not in the trust file {trusting.trust_file(settings)}"
                           + (" (it comes from MLCLOUD_TRUSTED_ISSUERS)"
                              if key.strip() in trusting.configured_keys(settings) else ""))
    click.echo(f"removed: {key.strip()}")


# ---- commands that live beside their subsystems ----------------------------------------------


def _register_subcommands() -> None:
    from mlcloud.batch.cli import predict_command
    from mlcloud.bench.cli import bench_command
    from mlcloud.bindle.cli import bindle
    from mlcloud.chaos.cli import chaos_command
    from mlcloud.deploy_cli import deploy_command, list_command, split_command, undeploy_command, unsplit_command
    from mlcloud.modelbuild.cli import models
    from mlcloud.oci.cli import build_command, keys_command, push_command
    from mlcloud.verify_cli import verify_command
    from mlcloud.washboard.cli import washboard_command

    for command in (bindle, models):
        main.add_command(command)
    main.add_command(build_command, "build")
    main.add_command(push_command, "push")
    main.add_command(keys_command, "keys")
    main.add_command(washboard_command, "washboard")
    main.add_command(bench_command, "bench")
    main.add_command(chaos_command, "chaos")
    main.add_command(deploy_command, "deploy")
    main.add_command(undeploy_command, "undeploy")
    main.add_command(predict_command, "predict")
    main.add_command(split_command, "split")
    main.add_command(unsplit_command, "unsplit")
    models.add_command(list_command, "list")
    main.add_command(verify_command, "verify")


_register_subcommands()


if __name__ == "__main__":
    main()
