"""Who may act through the washboard: the holder of its token, from the washboard's own page.

Reading (the page, its stream, the JSON views) is open to whoever reaches the address, which is
127.0.0.1 unless ``--address`` says otherwise; everything shown is masked (:mod:`mlcloud.masking`).
An action (any request but GET, HEAD, OPTIONS) must pass two checks, in this order:

1. **Not cross-site** (403): ``Sec-Fetch-Site``, which browsers send, is ``same-origin`` or
   ``none``, and ``Origin``, when sent, is this server. A form or script on another web site open
   in the same browser is refused before anything else is looked at.
2. **The token** (401): ``Authorization: Bearer TOKEN``, where TOKEN is ``state_dir/washboard.token``,
   made once (mode 0600) by the first ``mlcloud up`` or ``mlcloud washboard``. Both print the page's
   address with the token in the fragment (``/#token=…``) when their output is a terminal: a
   browser never sends a fragment to a server, so the token is in no access log or ``Referer``.
   The page keeps it in its origin's localStorage, takes it out of the address bar and sends it
   with each action. Only a SHA-256 digest is kept in the server, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from mlcloud.errors import ConfigError, Unauthorized

TOKEN_FILE = "washboard.token"
TOKEN_DIGEST = web.AppKey("token_digest", bytes)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = frozenset({"same-origin", "none"})  # Sec-Fetch-Site values of the page itself or a typed URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_or_create_token(state_dir: Path) -> str:
    """The washboard's token in ``state_dir``, made on first use; refused if others may read it."""
    path = state_dir / TOKEN_FILE
    if not path.exists():
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"{path} may be read by other users: chmod 600 it (or delete it for a new token)")
    token = path.read_text().strip()
    if not token:
        raise ConfigError(f"{path} is empty: delete it and a new token is made")
    return token


def page_url(address: str, token: str) -> str:
    """The page's address with the token where only the browser sees it."""
    return f"http://{address}/#token={token}"


def announcement(address: str, token: str, state_dir: Path, *, terminal: bool) -> str:
    """What ``mlcloud up`` says of the washboard: :func:`page_url` on a terminal; where the token
    is when its output goes elsewhere (``deploy/run.sh``'s log file), so no log holds the token."""
    if terminal:
        return page_url(address, token)
    return f"http://{address}/   (actions need the token in {state_dir / TOKEN_FILE}: open …/#token=TOKEN)"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def refuse_cross_site(request: web.Request) -> None:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in SAME_SITE:
        raise web.HTTPForbidden(reason="Forbidden", text=f"a {fetch_site} request cannot act on the lattice")
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        raise web.HTTPForbidden(reason="Forbidden", text=f"actions are accepted from {request.host} only, not {origin}")


def check_token(request: web.Request) -> None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("actions need the washboard's token: open the address `mlcloud up` printed (…/#token=…)")
    if not hmac.compare_digest(token_digest(presented.strip()), request.app[TOKEN_DIGEST]):
        raise Unauthorized("the washboard's token is not valid: open the address `mlcloud up` printed (…/#token=…)")


@web.middleware
async def guard_actions(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS:
        refuse_cross_site(request)
        check_token(request)
    return await handler(request)
