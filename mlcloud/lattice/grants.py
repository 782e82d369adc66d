"""Chain grants: how a stage of a chain calls the next one on behalf of the chain's originator.

A chain's later stages are called by the stage before them, not by the originator (the api
actor), and the forwarding stage (the preprocess actor) need not be allowed to call the next
one itself (the mlinference provider). So the originator signs a :class:`Grant` with its
instance's user nkey when it starts the chain: the invocation id, an expiry, and the stages
(target and operation) the chain may reach, next to the originator's user JWT, which the lattice
account signed with the originator's component key as its name. Forwarded calls travel on
``wasmbus.fwd.…`` subjects; their receiver (:class:`Verifier`) checks the JWT against the
account, the grant against the JWT's key, the expiry, and that it is itself one of the stages,
and then takes the originator as the caller (so a provider applies the originator's link).

What a grant permits: any holder (each stage sees it) can call the stages it names, as the
originator, with any payload, until it expires (the call's deadline plus :data:`CLOCK_SLACK`).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import msgspec

from mlcloud.errors import ClaimsError
from mlcloud.identity import verify
from mlcloud.lattice.auth import Credentials, decode_jwt

CLOCK_SLACK = 30.0  # seconds a grant outlives its call's deadline: clocks of two machines differ
_CACHED_USERS = 256


class Grant(msgspec.Struct, frozen=True):
    """The originator's user JWT, the signed :class:`GrantBody` and the signature."""

    jwt: str
    body: bytes
    sig: bytes


class GrantBody(msgspec.Struct, frozen=True, array_like=True):
    id: str
    exp: float
    stages: list[tuple[str, str]]  # (target, op) of every stage after the first


_body_decoder = msgspec.msgpack.Decoder(GrantBody)


class Signer:
    """Signs the grants of the chains an instance starts."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def grant(self, invocation_id: str, stages: list[tuple[str, str]], timeout: float) -> Grant:
        body = msgspec.msgpack.encode(GrantBody(invocation_id, time.time() + timeout + CLOCK_SLACK, stages))
        return Grant(self.credentials.jwt, body, self.credentials.key.sign(body))


class Verifier:
    """Checks grants against the lattice account's key; remembers the user JWTs it has checked."""

    def __init__(self, account: str) -> None:
        self.account = account
        self._users: OrderedDict[str, tuple[str, str]] = OrderedDict()  # jwt → (user key, component key)

    def caller(self, grant: Grant | None, *, invocation_id: str, target: str, op: str) -> str:
        """The originator's component key, if ``grant`` lets it call ``op`` on ``target`` now."""
        if grant is None:
            raise ClaimsError(f"{op}: a forwarded call without a grant is refused")
        user_key, component = self._user(grant.jwt)
        verify(user_key, grant.body, grant.sig)
        try:
            body = _body_decoder.decode(grant.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ClaimsError(f"{op}: malformed grant: {exc}") from exc
        if body.id != invocation_id or body.exp < time.time() or (target, op) not in body.stages:
            raise ClaimsError(f"{op}: the grant of {component} does not cover this call (another call, "
                              "expired, or not one of its stages)")
        return component

    def _user(self, jwt: str) -> tuple[str, str]:
        user = self._users.get(jwt)
        if user is None:
            claims = decode_jwt(jwt, issuer=self.account)
            user = self._users[jwt] = (claims["sub"], claims["name"])
            if len(self._users) > _CACHED_USERS:
                self._users.popitem(last=False)
        return user
