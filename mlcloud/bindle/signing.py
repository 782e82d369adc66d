"""Invoice signatures and keyrings, as the Bindle reference implements them.

What is signed (the reference's ``Invoice::cleartext``) is the lines

    by, name, version, role, "~", then each parcel's sha256 in invoice order

joined with ``\\n`` (no trailing newline), signed with ed25519. The signature and the public key
are base64 (standard alphabet, padded) in a ``[[signature]]`` block; ``at`` is not signed.

Who signs in mlcloud: whoever pushes a model signs its invoice as ``creator`` with the account
key (:func:`sign_with_nkey`, ``by`` = the account's A… key), and the Bindle server adds its own
``host`` signature to every invoice it stores. Account keys are nkeys; :func:`keyring_of_accounts`
is the one place they become the base64 keys of a keyring.

:func:`verify_invoice` is the reference's GreedyVerification as its documentation states it: an
invoice needs at least one signature, every signature must verify, and every creator signature
must come from a key on the keyring (at least one must be there). The reference's code also
requires the other signers (host, proxy) on the keyring; we do not, because a Bindle server's
host key is made by that server and could only be learned from it (``/v1/bindle-keys``), so
trusting it would add nothing the creator's signature does not already cover: the name, the
version and every parcel's sha256. A host signature must still verify, so no signature on an
invoice can be altered. A keyring is the reference's TOML (``version = "1.0"`` and ``[[key]]``).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec
import nacl.exceptions
import nacl.signing

from mlcloud.bindle.errors import SignatureInvalid
from mlcloud.bindle.models import Invoice, Signature, SignatureRole, _Doc, decode, to_toml
from mlcloud.identity import verify_key

if TYPE_CHECKING:
    from mlcloud.identity import KeyPair

KEYRING_VERSION = "1.0"


class _HasSigningKey(Protocol):
    @property
    def signing_key(self) -> nacl.signing.SigningKey: ...


SigningKeyLike = nacl.signing.SigningKey | _HasSigningKey  # mlcloud.identity.KeyPair fits


class KeyEntry(_Doc, kw_only=True):
    label: str
    roles: list[SignatureRole]  # required (and so always written), as the reference reads it
    key: str
    label_signature: str | None = None


class KeyRing(_Doc, kw_only=True, omit_defaults=False):
    version: str = KEYRING_VERSION
    key: list[KeyEntry] = msgspec.field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        return decode(Path(path).read_bytes(), cls, error=SignatureInvalid)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(to_toml(self))

    def add(self, label: str, key: SigningKeyLike | nacl.signing.VerifyKey | str,
            roles: list[SignatureRole] | None = None) -> KeyRing:
        entry = KeyEntry(label=label, key=public_key_b64(key),
                         roles=list(roles or [SignatureRole.CREATOR]))
        return msgspec.structs.replace(self, key=[*self.key, entry])

    def contains(self, key_b64: str) -> bool:
        return any(entry.key == key_b64 for entry in self.key)


def _signing_key(key: SigningKeyLike) -> nacl.signing.SigningKey:
    return key if isinstance(key, nacl.signing.SigningKey) else key.signing_key


def public_key_b64(key: SigningKeyLike | nacl.signing.VerifyKey | str) -> str:
    """The base64 public key the reference writes in ``key``; a string is taken as already so."""
    if isinstance(key, str):
        return key
    if isinstance(key, nacl.signing.VerifyKey):
        return base64.b64encode(bytes(key)).decode()
    return base64.b64encode(bytes(_signing_key(key).verify_key)).decode()


def cleartext(invoice: Invoice, by: str, role: SignatureRole | str) -> bytes:
    lines = [by, invoice.bindle.name, invoice.bindle.version, str(SignatureRole(role)), "~"]
    lines.extend(parcel.label.sha256 for parcel in invoice.parcel or ())
    return "\n".join(lines).encode()


def sign_invoice(invoice: Invoice, by: str, key: SigningKeyLike,
                 role: SignatureRole = SignatureRole.CREATOR, at: int | None = None) -> Invoice:
    """A copy of ``invoice`` with one more ``[[signature]]``; one key may sign only once."""
    signing_key = _signing_key(key)
    key_b64 = public_key_b64(signing_key)
    existing = list(invoice.signature or ())
    if any(sig.key == key_b64 for sig in existing):
        raise SignatureInvalid(f"key {key_b64} has already signed {invoice.id}")
    signed = signing_key.sign(cleartext(invoice, by, role)).signature
    entry = Signature(by=by, signature=base64.b64encode(signed).decode(), key=key_b64,
                      role=SignatureRole(role), at=int(time.time()) if at is None else at)
    return msgspec.structs.replace(invoice, signature=[*existing, entry])


def sign_with_nkey(invoice: Invoice, pair: KeyPair,
                   role: SignatureRole = SignatureRole.CREATOR) -> Invoice:
    """``invoice`` signed by an nkey key pair (``by`` = its public key); as it was if it has already."""
    if any(sig.key == public_key_b64(pair) for sig in invoice.signature or ()):
        return invoice
    return sign_invoice(invoice, pair.public_key, pair, role)


def keyring_of_accounts(public_keys: Iterable[str],
                        role: SignatureRole = SignatureRole.CREATOR) -> KeyRing:
    """A keyring of nkey public keys (A…), each labelled with itself."""
    ring = KeyRing()
    for key in sorted(set(public_keys)):
        ring = ring.add(key, verify_key(key), [role])
    return ring


def verify_signature(invoice: Invoice, sig: Signature) -> None:
    broken = (f"invoice {invoice.id}: the {sig.role} signature by {sig.by!r} (key {sig.key}) "
              "does not verify")
    try:
        raw_key = base64.b64decode(sig.key, validate=True)
        key = nacl.signing.VerifyKey(raw_key)
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
        raise SignatureInvalid(f"{broken}: its key is corrupt") from exc
    try:
        raw_sig = base64.b64decode(sig.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid(f"{broken}: the signature block is corrupt") from exc
    if len(raw_sig) != 64:
        raise SignatureInvalid(f"{broken}: the signature block is corrupt")
    try:
        key.verify(cleartext(invoice, sig.by, sig.role), raw_sig)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise SignatureInvalid(f"{broken}: the invoice changed after it was signed") from exc


def verify_signatures(invoice: Invoice) -> None:
    """Raise :class:`SignatureInvalid` unless every signature on ``invoice`` verifies."""
    for sig in invoice.signature or ():
        verify_signature(invoice, sig)


def verify_invoice(invoice: Invoice, keyring: KeyRing) -> None:
    """Raise :class:`SignatureInvalid` unless the invoice passes GreedyVerification (above)."""
    untrusted = f"invoice {invoice.id} is not signed by a trusted creator"
    signatures = invoice.signature or []
    if not signatures:
        raise SignatureInvalid(f"{untrusted}: it has no signature "
                               "(at least one signature is required)")
    verify_signatures(invoice)
    creators = [sig for sig in signatures if sig.role == SignatureRole.CREATOR]
    if not creators:
        raise SignatureInvalid(f"{untrusted}: it has no creator signature")
    for sig in creators:
        if not keyring.contains(sig.key):
            raise SignatureInvalid(f"{untrusted}: creator key {sig.key} ({sig.by}) "
                                   "is not on the keyring")
