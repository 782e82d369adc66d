"""Running an aiohttp application inside a process that does other things (``mlcloud up``)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator

from aiohttp import web

from mlcloud.errors import PortInUse
from mlcloud.settings import split_address


@contextlib.asynccontextmanager
async def running_app(app: web.Application, address: str, what: str, **runner_kwargs) -> AsyncIterator[str]:
    """Serve ``app`` on ``address`` (``host:port``, port 0 picks one) and yield ``host:port``."""
    host, port = split_address(address)
    runner = web.AppRunner(app, **runner_kwargs)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{what} cannot listen on {host}:{port}: the port is in use", port=port) from exc
            raise
        yield f"{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
