"""Opening NATS connections the same way everywhere, with an explicit time limit.

nats-py retries the first connection for ever when the server is not there (even with
reconnecting off) and logs a traceback per attempt; here the first connection has a deadline
and becomes one clear :class:`~mlcloud.errors.NoResponders` error, and later connection
trouble is logged as one line.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
from nats.aio.client import Client as NATS

from mlcloud.errors import NoResponders

log = logging.getLogger(__name__)


async def connect(url: str, *, name: str, reconnect: bool = True, timeout: float = 30.0) -> NATS:
    """Connect to ``url`` within ``timeout`` seconds; keep reconnecting afterwards if ``reconnect``."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS (%s): %s", name, exc or type(exc).__name__)

    options: dict = {"name": name, "error_cb": on_error, "connect_timeout": min(timeout, 5.0)}
    if reconnect:
        options.update(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=0)
    try:
        return await asyncio.wait_for(nats.connect(url, **options), timeout)
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        raise NoResponders(f"cannot reach NATS at {url} within {timeout:g} s: is `mlcloud up` running?") from exc
