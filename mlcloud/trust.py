"""Which account keys a process trusts to sign the artifacts it runs: one answer, :func:`trusted_issuers`.

Trust is on by default. A host runs an artifact only when its claims are signed by one of:

* the local account: the public key of ``mlcloud.oci.keys.account_key_path(keys_dir)``, the key
  that ``mlcloud build`` (and so ``make run``) signs with, once it exists;
* the keys in the trust file ``keys_dir / "trusted_issuers"`` (one A… key a line, ``#`` comments),
  written by ``mlcloud trust add KEY`` / ``trust remove KEY`` with mode 0600;
* the keys of ``Settings.trusted_issuers`` (``MLCLOUD_TRUSTED_ISSUERS``, comma-separated).

The three add up. The setting adds rather than replaces because it and the trust file say the same
thing ("trust this signer too"): a user who sets the variable for a CI signer still expects their
own builds and the keys they added to run, and a key added with ``trust add`` must not vanish
silently when someone exports a variable. The local account is always trusted: whoever holds its
seed can already sign as it, and the threat model trusts the account key's holder.

Each call reads the files again, so ``mlcloud trust add`` takes effect on a running host's next
start of a component. Nothing here creates a key: an account that does not exist signed nothing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from mlcloud.errors import ClaimsError, ConfigError, RequestError
from mlcloud.identity import KeyKind, KeyPair, kind_of
from mlcloud.oci.keys import account_key_path
from mlcloud.settings import ENV_PREFIX, Settings

TRUST_FILE = "trusted_issuers"
_PUBLIC_KEY_LENGTH = 56  # base32 of prefix byte + 32-byte ed25519 key + CRC16


def trust_file(settings: Settings) -> Path:
    return settings.keys_dir / TRUST_FILE


def check_account_key(key: str) -> str:
    """``key`` stripped, or RequestError saying why it is not an account public key (A…).

    A seed (S…) is refused without echoing any of it: it is a secret pasted in the wrong place.
    """
    key = key.strip()
    if key.startswith("S"):
        raise RequestError("that is a seed (a secret key); give the account's public key (A…), "
                           "as `mlcloud keys` prints it")
    try:
        kind = kind_of(key)
    except ClaimsError as exc:
        raise RequestError(f"{key!r} is not an nkey public key ({exc.message})") from exc
    if kind is not KeyKind.ACCOUNT or len(key) != _PUBLIC_KEY_LENGTH:
        raise RequestError(f"{key!r} is not an account public key (A…, {_PUBLIC_KEY_LENGTH} characters)")
    return key


def local_account(settings: Settings) -> str | None:
    """The public key of this user's signing account, or None before the first build made it."""
    path = account_key_path(settings.keys_dir)
    try:
        seed = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the account key {path}: {exc.strerror}") from exc
    pair = KeyPair.from_seed(seed)
    return pair.public_key if pair.kind is KeyKind.ACCOUNT else None


def added_keys(settings: Settings) -> list[str]:
    """The keys of the trust file, in its order; ConfigError names a line that is no account key."""
    path = trust_file(settings)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read the trust file {path}: {exc.strerror}") from exc
    keys = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            keys.append(check_account_key(text))
        except RequestError as exc:
            raise ConfigError(f"{path} line {number}: {exc.message}; fix or remove it "
                              "(`mlcloud trust remove`)") from exc
    return keys


def configured_keys(settings: Settings) -> list[str]:
    """The keys of ``Settings.trusted_issuers``; ConfigError names one that is no account key."""
    keys = []
    for text in (k.strip() for k in settings.trusted_issuers.split(",")):
        if not text:
            continue
        try:
            keys.append(check_account_key(text))
        except RequestError as exc:
            raise ConfigError(f"{ENV_PREFIX}TRUSTED_ISSUERS: {exc.message}") from exc
    return keys


def trusted_issuers(settings: Settings) -> frozenset[str]:
    """Every account whose signature this process accepts (empty: nothing signed is trusted)."""
    local = local_account(settings)
    return frozenset([*([local] if local else []), *added_keys(settings), *configured_keys(settings)])


def add(settings: Settings, key: str) -> bool:
    """Add ``key`` to the trust file; False when it was already there."""
    key = check_account_key(key)
    keys = added_keys(settings)
    if key in keys:
        return False
    _write(trust_file(settings), [*keys, key])
    return True


def remove(settings: Settings, key: str) -> bool:
    """Remove ``key`` from the trust file; False when it was not there.

    The local account and the setting's keys are not in the file, so this does not untrust them.
    """
    key = key.strip()
    keys = added_keys(settings)
    if key not in keys:
        return False
    _write(trust_file(settings), [k for k in keys if k != key])
    return True


def _write(path: Path, keys: list[str]) -> None:
    """Replace the trust file atomically; created 0600 (in a 0700 folder), never chmod'ed after."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("# Account keys whose signed artifacts mlcloud hosts run (`mlcloud trust add`).\n")
            f.writelines(f"{k}\n" for k in keys)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
