"""Opening, flushing and leaving NATS connections the same way everywhere; the first connection has a time limit.

nats-py retries the first connection for ever when the server is not there (even with
reconnecting off) and logs a traceback per attempt; here the first connection has a deadline
and becomes one clear :class:`~mlcloud.errors.LatticeUnavailable` error (see
:mod:`mlcloud.lattice.natserrors`), and later connection trouble is logged as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS, RawCredentials

from mlcloud.errors import LatticeUnavailable
from mlcloud.lattice.auth import Credentials, inbox_prefix
from mlcloud.lattice.natserrors import connecting, nats_errors

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]


async def connect(
    url: str, *, name: str, credentials: Credentials | None = None, reconnect: bool = True, timeout: float = 30.0,
    error_cb: ErrorCallback | None = None,
    disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None, closed_cb: Callback | None = None,
) -> NATS:
    """Connect to ``url`` within ``timeout`` seconds; keep reconnecting afterwards if ``reconnect``.

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
    options.update({k: v for k, v in (("disconnected_cb", disconnected_cb), ("reconnected_cb", reconnected_cb),
                                      ("closed_cb", closed_cb)) if v is not None})
    if reconnect:
        options.update(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=0)
    with connecting(url, timeout):
        return await asyncio.wait_for(nats.connect(url, **options), timeout)


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
