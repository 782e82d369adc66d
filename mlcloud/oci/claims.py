"""Claims tokens: the signed statement that says who issued an artifact and what it may do.

A token is a compact JWT, as wasmCloud's ``wascap`` writes them::

    base64url({"typ":"jwt","alg":"Ed25519"}) . base64url(payload) . base64url(signature)

signed with the issuing *account*'s ed25519 nkey (prefix A). The payload::

    {"jti": "…", "iat": 1700000000, "iss": "A…", "sub": "M…" | "V…",
     "wascap": {"name": "preprocess", "ver": "0.1.0", "rev": 1, "call_alias": "preprocess",
                "caps": ["wasmcloud:mlinference"], "contract": "", "prov": false,
                "hash": "<hex sha256 of the code layer>", "tags": []},
     "wascap_revision": 3}

PyJWT is not installed and its EdDSA path wants PEM/cryptography keys, not nkeys, so the few
lines of JWT are written here; signing and verifying go through :mod:`mlcloud.identity`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from mlcloud.errors import ClaimsError
from mlcloud.identity import KeyKind, KeyPair, kind_of, verify
from mlcloud.oci.errors import InvalidSignature, MalformedToken, TokenExpired

HEADER = {"typ": "jwt", "alg": "Ed25519"}
# "EdDSA" is the RFC 8037 name for the same algorithm; accept tokens from tools that use it.
_ALGORITHMS = {"ed25519", "eddsa"}
WASCAP_REVISION = 3
# A little slack for hosts whose clocks disagree with the builder's.
CLOCK_SKEW = 60


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken(f"claims token is not base64url: {exc}") from exc


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(text))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedToken(f"claims token {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"claims token {what} is not a JSON object")
    return value


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Claims:
    """What a token says. ``issuer`` and ``subject`` are nkey public keys."""

    issuer: str
    subject: str
    name: str
    version: str
    revision: int
    hash: str
    caps: tuple[str, ...] = ()
    contract: str = ""
    provider: bool = False
    call_alias: str | None = None
    tags: tuple[str, ...] = ()
    issued_at: int = field(default_factory=lambda: int(time.time()))
    jti: str = field(default_factory=lambda: os.urandom(16).hex())
    expires: int | None = None
    not_before: int | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "jti": self.jti,
            "iat": self.issued_at,
            "iss": self.issuer,
            "sub": self.subject,
            "wascap": {
                "name": self.name,
                "ver": self.version,
                "rev": self.revision,
                "call_alias": self.call_alias,
                "caps": list(self.caps),
                "contract": self.contract,
                "prov": self.provider,
                "hash": self.hash,
                "tags": list(self.tags),
            },
            "wascap_revision": WASCAP_REVISION,
        }
        if self.expires is not None:
            payload["exp"] = self.expires
        if self.not_before is not None:
            payload["nbf"] = self.not_before
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Claims:
        try:
            cap = payload["wascap"]
            claims = cls(
                issuer=str(payload["iss"]),
                subject=str(payload["sub"]),
                name=str(cap["name"]),
                version=str(cap["ver"]),
                revision=int(cap.get("rev", 0)),
                hash=str(cap["hash"]),
                caps=tuple(str(c) for c in cap.get("caps") or ()),
                contract=str(cap.get("contract") or ""),
                provider=bool(cap.get("prov", False)),
                call_alias=cap.get("call_alias"),
                tags=tuple(str(t) for t in cap.get("tags") or ()),
                issued_at=int(payload["iat"]),
                jti=str(payload.get("jti", "")),
                expires=int(payload["exp"]) if payload.get("exp") is not None else None,
                not_before=int(payload["nbf"]) if payload.get("nbf") is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedToken(f"claims token lacks a valid field: {exc!r}") from exc
        return claims


def sign(claims: Claims, account: KeyPair) -> str:
    """Encode ``claims`` as a JWT signed by ``account`` (which must be the claims' issuer)."""
    if account.kind is not KeyKind.ACCOUNT:
        raise ClaimsError(f"claims are issued by an account key (A…), not {account.public_key[:1]}…")
    if claims.issuer != account.public_key:
        raise ClaimsError(f"claims name issuer {claims.issuer}, but the key is {account.public_key}")
    signing_input = _b64encode(_dumps(HEADER)) + "." + _b64encode(_dumps(claims.to_payload()))
    signature = account.sign(signing_input.encode())
    return signing_input + "." + _b64encode(signature)


def decode_unverified(token: str) -> Claims:
    """The claims of ``token`` without checking anything: for display only."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise MalformedToken(f"claims token has {len(parts)} parts, a JWT has 3")
    return Claims.from_payload(_json_part(parts[1], "payload"))


def verify_token(token: str, now: float | None = None) -> Claims:
    """Decode ``token`` and check its header, signature and validity window.

    Raises :class:`MalformedToken`, :class:`InvalidSignature` or :class:`TokenExpired`.
    Whether the issuer is *trusted* and whether the claims fit the artifact are the caller's
    questions (see :mod:`mlcloud.oci.verify`).
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise MalformedToken(f"claims token has {len(parts)} parts, a JWT has 3")
    header = _json_part(parts[0], "header")
    if str(header.get("typ", "")).lower() != "jwt" or str(header.get("alg", "")).lower() not in _ALGORITHMS:
        raise MalformedToken(f"claims token header {header} is not an Ed25519 JWT")
    payload = _json_part(parts[1], "payload")
    claims = Claims.from_payload(payload)
    try:
        issuer_kind = kind_of(claims.issuer)
        subject_kind = kind_of(claims.subject)
    except ClaimsError as exc:
        raise MalformedToken(f"claims token names an invalid key: {exc}") from exc
    if issuer_kind is not KeyKind.ACCOUNT:
        raise MalformedToken(f"claims issuer {claims.issuer} is not an account key (A…)")
    if subject_kind not in (KeyKind.ACTOR, KeyKind.PROVIDER):
        raise MalformedToken(f"claims subject {claims.subject} is not an actor (M…) or provider (V…) key")
    try:
        verify(claims.issuer, f"{parts[0]}.{parts[1]}".encode(), _b64decode(parts[2]))
    except ClaimsError as exc:
        raise InvalidSignature(
            f"claims token for {claims.name} does not verify with its issuer {claims.issuer}"
        ) from exc
    moment = time.time() if now is None else now
    if claims.expires is not None and moment > claims.expires + CLOCK_SKEW:
        raise TokenExpired(f"claims token for {claims.name} expired at {claims.expires}")
    if claims.not_before is not None and moment + CLOCK_SKEW < claims.not_before:
        raise TokenExpired(f"claims token for {claims.name} is not valid before {claims.not_before}")
    return claims
