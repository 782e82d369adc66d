"""nkey identities (ed25519) for accounts, hosts, actors and providers, as wasmCloud uses them.

The ``nkeys`` package signs and verifies but only knows NATS's own prefixes (O, S, N, C, A, U).
wasmCloud adds M (module = actor) and V (service = provider), so encoding is done here with the
same base32 + CRC16 layout nkeys uses; signing is delegated to PyNaCl.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing
from nkeys import crc16_checksum

from mlcloud.errors import ClaimsError

_PREFIX_SEED = 18 << 3  # 'S'


class KeyKind(enum.Enum):
    """Public-key prefixes: the first letter says what the key identifies."""

    ACCOUNT = 0  # 'A'
    HOST = 13 << 3  # 'N' (server)
    ACTOR = 12 << 3  # 'M' (module)
    PROVIDER = 21 << 3  # 'V' (service)
    OPERATOR = 14 << 3  # 'O'
    USER = 20 << 3  # 'U' (a NATS connection's identity)

    @property
    def letter(self) -> str:
        return base64.b32encode(bytes([self.value, 0, 0, 0, 0]))[:1].decode()


def _with_crc(raw: bytes) -> str:
    return base64.b32encode(raw + crc16_checksum(raw)).decode().rstrip("=")


def _decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ClaimsError(f"not an nkey: {text[:8]}…") from exc
    body, crc = raw[:-2], raw[-2:]
    if crc16_checksum(body) != crc:
        raise ClaimsError(f"nkey checksum mismatch: {text[:8]}…")
    return body


@dataclass(frozen=True)
class KeyPair:
    kind: KeyKind
    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls, kind: KeyKind) -> KeyPair:
        return cls(kind, nacl.signing.SigningKey(os.urandom(32)))

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        raw = _decode(seed.strip())
        b1 = raw[0] & 0xF8
        if b1 != _PREFIX_SEED:
            raise ClaimsError("not an nkey seed")
        prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        try:
            kind = KeyKind(prefix)
        except ValueError as exc:
            raise ClaimsError(f"unknown nkey prefix byte {prefix}") from exc
        return cls(kind, nacl.signing.SigningKey(raw[2:34]))

    @property
    def seed(self) -> str:
        b1 = _PREFIX_SEED | (self.kind.value >> 5)
        b2 = (self.kind.value & 0x1F) << 3
        return _with_crc(bytes([b1, b2]) + bytes(self.signing_key))

    @property
    def public_key(self) -> str:
        return _with_crc(bytes([self.kind.value]) + bytes(self.signing_key.verify_key))

    def sign(self, data: bytes) -> bytes:
        return self.signing_key.sign(data).signature


@functools.lru_cache(maxsize=256)
def verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The ed25519 key inside an nkey public key (what Bindle keyrings hold, base64); remembered,
    since every stage of every chain checks a grant with its originator's key."""
    try:
        return nacl.signing.VerifyKey(_decode(public_key)[1:])
    except ValueError as exc:  # PyNaCl's wrong-length error is a ValueError too
        raise ClaimsError(f"not an nkey public key: {public_key[:8]}…") from exc


def verify(public_key: str, data: bytes, signature: bytes) -> None:
    """Raise ClaimsError unless ``signature`` is ``public_key``'s signature of ``data``."""
    key = verify_key(public_key)
    try:
        key.verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise ClaimsError(f"bad signature by {public_key}") from exc


def kind_of(public_key: str) -> KeyKind:
    raw = _decode(public_key)
    try:
        return KeyKind(raw[0])
    except ValueError as exc:
        raise ClaimsError(f"unknown key prefix in {public_key[:8]}…") from exc


def load_or_create(path: Path, kind: KeyKind) -> KeyPair:
    """The key stored at ``path`` (a seed file, mode 0600), created on first use."""
    if path.exists():
        return KeyPair.from_seed(path.read_text())
    pair = KeyPair.generate(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pair.seed + "\n")
    return pair
