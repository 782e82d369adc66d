"""The one boundary where nats-py's errors become :mod:`mlcloud.errors`, keeping ``from exc``::

    nats-py (or asyncio) raises                 while        mlcloud raises        HTTP
    nats.errors.NoRespondersError               a request    NoResponders          503
    nats.errors.TimeoutError / TimeoutError     a request    RpcTimeout            504
    nats.errors.MaxPayloadError                 a request    PayloadTooLarge       413
    any other nats.errors.Error (closed,        any call     LatticeUnavailable    503
      draining, reconnect buffer full,
      JetStream errors the caller does not
      handle itself)
    NoServersError, OSError, TimeoutError       connecting   LatticeUnavailable    503

A request made or waiting while the connection is down fails as ``LatticeUnavailable`` before
nats-py has a say (:func:`mlcloud.lattice.connect.while_connected`).

Wrap every use of a NATS connection in :func:`nats_errors` (and opening one in :func:`connecting`,
which :func:`mlcloud.lattice.connect.connect` does); code that expects a particular nats-py error
(a missing key, a bucket to create) catches it inside the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import nats.errors

from mlcloud.errors import LatticeUnavailable, NoResponders, PayloadTooLarge, RpcTimeout


@contextlib.contextmanager
def nats_errors(
    what: str, subject: str = "", *, timeout: float = 0.0, size: int = 0, limit: int = 0, **details: Any
) -> Iterator[None]:
    """Raise nats-py's errors from the block as mlcloud errors.

    ``what`` names the operation (``Op.A → Op.B``, ``the control request``) and ``subject`` where
    it went; ``timeout``, ``size`` (bytes sent) and ``limit`` (the server's max_payload) go into
    the messages that need them;
    ``details`` travel with the error.
    """
    try:
        yield
    except nats.errors.NoRespondersError as exc:
        raise NoResponders(f"nobody serves {subject} ({what})", subject=subject, **details) from exc
    except TimeoutError as exc:  # nats.errors.TimeoutError is one too
        raise RpcTimeout(f"{what} on {subject} did not answer within {timeout:g} s",
                         subject=subject, **details) from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLarge(
            f"{what}: {size} bytes is more than this NATS server carries ({limit} bytes; raise its max_payload)"
        ) from exc
    except nats.errors.Error as exc:
        where = f" on {subject}" if subject else ""
        raise LatticeUnavailable(f"{what}{where}: NATS cannot carry it now ({exc or type(exc).__name__})",
                                 **details) from exc


@contextlib.contextmanager
def connecting(url: str, timeout: float) -> Iterator[None]:
    """Raise a failed first connection to ``url`` as :class:`~mlcloud.errors.LatticeUnavailable`."""
    try:
        yield
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise LatticeUnavailable(
            f"cannot reach NATS at {url} within {timeout:g} s ({exc or type(exc).__name__}): is `mlcloud up` running?"
        ) from exc
