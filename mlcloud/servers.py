"""Serving: free ports, an aiohttp app inside a process that does other things, and Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from mlcloud.errors import PortInUse
from mlcloud.settings import split_address


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick); another process may take it before it
    is used. Prefer port 0 and reading back what the server bound (:func:`running_app`,
    ``NatsServer(port=0)``, ``EmbeddedRegistry`` on port 0, ``BindleServerProcess``); this is for
    servers that cannot say (the httpserver provider inside a host process, configs naming another
    server's port) and for an address that must stay unanswered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port``; other bind errors (a bad host) raise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The option servers set, so a port in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@contextlib.asynccontextmanager
async def running_app(app: web.Application, address: str, what: str, **runner_kwargs: Any) -> AsyncIterator[str]:
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


async def wait_for_stop_signal(message: str = "mlcloud: stopping (Ctrl-C again to force)…") -> None:
    """Return on the first SIGINT/SIGTERM; a second one exits immediately."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            raise SystemExit(130)
        print("\n" + message, flush=True)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
