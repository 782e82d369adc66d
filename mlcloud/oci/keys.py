"""Where the signing keys live: the issuer account key and each component's subject key.

All keys are nkey seed files (mode 0600) in ``Settings.keys_dir``, created on first use:

    <user>_account.nk       the account that issues (signs) artifacts built on this machine
    <name>_module.nk        an actor's identity (M…), see ComponentManifest.key_path
    <name>_service.nk       a provider's identity (V…)
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from pathlib import Path

from mlcloud.errors import ClaimsError
from mlcloud.identity import KeyKind, KeyPair, load_or_create

KEY_SUFFIX = ".nk"


def _user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with a bare uid)
        name = "mlcloud"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "mlcloud"


def account_key_path(keys_dir: Path, user: str | None = None) -> Path:
    return Path(keys_dir) / f"{user or _user()}_account{KEY_SUFFIX}"


def load_account(keys_dir: Path, user: str | None = None) -> KeyPair:
    """The issuer account key, created on first use."""
    pair = load_or_create(account_key_path(keys_dir, user), KeyKind.ACCOUNT)
    if pair.kind is not KeyKind.ACCOUNT:
        raise ClaimsError(f"{account_key_path(keys_dir, user)} holds a {pair.kind.name} key, not an account")
    return pair


@dataclass(frozen=True)
class KeyInfo:
    name: str
    kind: str
    public_key: str
    path: Path


def list_keys(keys_dir: Path) -> list[KeyInfo]:
    """Every key file in ``keys_dir``, sorted by name; unreadable ones show kind ``invalid``."""
    found = []
    for path in sorted(Path(keys_dir).glob(f"*{KEY_SUFFIX}")):
        try:
            pair = KeyPair.from_seed(path.read_text())
        except (ClaimsError, OSError):
            found.append(KeyInfo(path.stem, "invalid", "", path))
            continue
        found.append(KeyInfo(path.stem, pair.kind.name.lower(), pair.public_key, path))
    return found
