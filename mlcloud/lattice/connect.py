"""Opening, flushing and leaving NATS connections the same way everywhere; the first connection has a time limit.

nats-py retries the first connection for ever when the server is not there (even with
reconnecting off) and logs a traceback per attempt; here the first connection has a deadline
and becomes one clear :class:`~mlcloud.errors.LatticeUnavailable` error (see
:mod:`mlcloud.lattice.natserrors`), and later connection trouble is logged as one line.

While a connection is down (nats-py reconnecting), a request waiting for its answer would wait
its whole deadline, and a new one would sit in nats-py's reconnect buffer: :func:`while_connected`
fails both at once instead, woken by the connection's ``disconnected`` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS, RawCredentials

from mlcloud.errors import LatticeUnavailable
from mlcloud.lattice.auth import Credentials, inbox_prefix
from mlcloud.lattice.natserrors import connecting, nats_errors
from mlcloud.settings import split_urls

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]


async def connect(
    url: str, *, name: str, credentials: Credentials | None = None, reconnect: bool = True, timeout: float = 30.0,
    error_cb: ErrorCallback | None = None,
    disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None, closed_cb: Callback | None = None,
) -> NATS:
    """Connect to ``url`` within ``timeout`` seconds; keep reconnecting afterwards if ``reconnect``.

    ``url`` may list several servers, comma-separated (:attr:`Settings.nats_urls
    <mlcloud.settings.Settings.nats_urls>`): the nodes of a NATS cluster. The client connects to
    one of them and, when that one dies, reconnects to another (and to the nodes the cluster
    advertises).

    The callbacks are nats-py's; without ``error_cb`` connection trouble is logged. With
    ``credentials`` (:mod:`mlcloud.lattice.auth`) the connection presents that user and takes its
    replies on that user's own inbox prefix, the only one it may subscribe to.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("NATS (%s): %s", name, exc or type(exc).__name__)

    options: dict[str, Any] = {"name": name, "error_cb": error_cb or on_error, "connect_timeout": min(timeout, 5.0)}
    if credentials is not None:
        options.update(user_credentials=RawCredentials(credentials.text),
                       inbox_prefix=inbox_prefix(credentials.public_key))
    nc = NATS()
    waiting: set[asyncio.Timeout] = set()

    async def on_disconnected() -> None:
        _wake(waiting)
        if disconnected_cb is not None:
            await disconnected_cb()

    options["disconnected_cb"] = on_disconnected
    options.update({k: v for k, v in (("reconnected_cb", reconnected_cb), ("closed_cb", closed_cb)) if v is not None})
    if reconnect:
        options.update(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=0)
    with connecting(url, timeout):
        await asyncio.wait_for(nc.connect(split_urls(url), **options), timeout)
    _waiting[nc] = waiting
    return nc


# The requests waiting on each connection that connect() opened; its disconnected callback wakes them.
_waiting: weakref.WeakKeyDictionary[NATS, set[asyncio.Timeout]] = weakref.WeakKeyDictionary()


def _wake(waiting: set[asyncio.Timeout]) -> None:
    now = asyncio.get_running_loop().time()
    for scope in waiting:
        scope.reschedule(now)


@contextlib.asynccontextmanager
async def while_connected(nc: NATS, what: str) -> AsyncIterator[None]:
    """Run the block (a request) only while ``nc`` is connected; else :class:`LatticeUnavailable` at once.

    Fails before the block when the connection is down, so nothing goes into nats-py's reconnect
    buffer: a request buffered there would reach its handler after reconnecting, when its caller
    was already told 503 and may have retried it (the work done twice, the answer going nowhere).
    When the connection drops during the block, the block is cancelled and fails the same way
    (for a connection :func:`connect` opened; others are only checked at the start).
    """
    scope = asyncio.timeout(None)
    waiting = _waiting.get(nc)
    try:
        async with scope:
            if not nc.is_connected:
                raise _unavailable(nc, what)
            if waiting is not None:
                waiting.add(scope)
            yield
    except TimeoutError as exc:
        if scope.expired():
            raise _unavailable(nc, what) from exc
        raise
    finally:
        if waiting is not None:
            waiting.discard(scope)


def _unavailable(nc: NATS, what: str) -> LatticeUnavailable:
    state = "closed" if nc.is_closed else "reconnecting" if nc.is_reconnecting else "not connected"
    return LatticeUnavailable(f"{what}: the connection to NATS is {state}; try again shortly")


async def leave(nc: NATS, name: str) -> None:
    """Drain ``nc`` (subscriptions finish what they took, then it closes); while NATS is away, close it.

    nats-py refuses to drain a connection that is reconnecting and leaves it reconnecting; a
    process on its way out then keeps trying for ever, or ends with a traceback.
    """
    if nc.is_closed:
        return
    try:
        with nats_errors(f"draining {name}'s connection"):
            await nc.drain()
    except LatticeUnavailable as err:
        log.info("%s; closing it instead", err.message)
        # Messages buffered meanwhile go out on close; a socket the server reset raises then, and
        # the connection is closed all the same (no more reconnecting).
        with contextlib.suppress(OSError):
            await nc.close()


async def flush(nc: NATS) -> None:
    """Return once nats-server has processed everything sent on ``nc`` so far: a SUB's interest is live.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of the commands (SUB, PUB)
    still in its buffer for its flusher task, so the PONG can come back before the server has
    read a SUB made just before; a request from another connection then meets "no responders".
    Waiting for that PONG lets the flusher write the buffer; the second PING goes out behind it.
    """
    await nc.flush()
    await nc.flush()
