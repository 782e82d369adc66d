"""``mlcloud washboard``: serve the washboard for a lattice that runs elsewhere, until Ctrl-C.

``mlcloud up`` serves the washboard itself; this command is for watching a lattice from another
machine or process (``mlcloud washboard --nats-url nats://lattice:4222``). It prints the page's
address with the token of ``state_dir/washboard.token`` (:mod:`.access`), which its actions need. The lead registers
``washboard_command`` in :mod:`mlcloud.cli`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import click

from mlcloud.errors import MLCloudError
from mlcloud.settings import DEFAULT_WASHBOARD_ADDRESS, Settings


async def serve(settings: Settings, say: Callable[[str], object] = click.echo) -> None:
    from mlcloud.servers import running_app, wait_for_stop_signal
    from mlcloud.washboard.access import announcement, load_or_create_token
    from mlcloud.washboard.app import create_washboard

    token = load_or_create_token(settings.state_dir)
    app = create_washboard(settings, token=token)
    async with running_app(app, settings.washboard_address, "the washboard", access_log=None) as address:
        say(f"washboard          {announcement(address, token, settings.state_dir, terminal=sys.stdout.isatty())}")
        say(f"                   lattice {settings.lattice!r} at {settings.effective_nats_url}")
        await wait_for_stop_signal()


@click.command("washboard")
@click.option("--nats-url", envvar="MLCLOUD_NATS_URL",
              help="NATS server of the lattice (default nats://127.0.0.1:4222).")
@click.option("--lattice", envvar="MLCLOUD_LATTICE", help="Lattice name (default: default).")
@click.option("--address", envvar="MLCLOUD_WASHBOARD_ADDRESS",
              help=f"host:port to serve the page on (default {DEFAULT_WASHBOARD_ADDRESS}; port 0 picks one).")
def washboard_command(nats_url: str | None, lattice: str | None, address: str | None) -> None:
    """Serve the live status page of a lattice; it waits for NATS and reconnects by itself."""
    settings = Settings.from_env(nats_url=nats_url, lattice=lattice, washboard_address=address)
    try:
        asyncio.run(serve(settings))
    except MLCloudError as err:
        raise click.ClickException(f"{err.kind}: {err.message}") from err
