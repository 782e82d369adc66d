"""Who may connect to the lattice's NATS, and what each connection may publish and subscribe to.

NATS's decentralized authentication (operator mode), which uses the same ed25519 nkeys as the
lattice's identities: an operator (O…) vouches for a system account and the lattice account
(A…, JetStream on); the lattice account signs a user JWT (v2) for every connection — each host,
the CLI and washboard (``ctl``), and each instance, whose JWT its host mints at start with the
permissions its signed claims allow. nats-server checks the JWT chain and the connection's proof
of its user nkey, and enforces the permissions; an anonymous connection is refused. The
operator's server config uses the MEMORY resolver, preloaded with both account JWTs.

Files (``state_dir/nats-auth``, mode 0700; every file 0600): ``operator.nk``, ``system.nk`` and
``account.nk`` (seeds, made on the first ``mlcloud up`` and kept), ``host.creds`` and
``ctl.creds`` (rewritten by each ``mlcloud up`` from the kept account key). ``mlcloud nats-creds``
writes a board's own folder of the same shape (:meth:`NatsAuth.write_board`).

Every connection's replies come to ``_INBOX.{its user key}.…`` (:func:`inbox_prefix`), the only
inbox it may subscribe to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mlcloud.errors import ClaimsError, ConfigError
from mlcloud.identity import KeyKind, KeyPair, load_or_create, verify
from mlcloud.lattice import subjects
from mlcloud.settings import Settings

AUTH_DIR = "nats-auth"
BOARD_SERVER_CONFIG = "server.conf"
INBOX = "_INBOX"
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def auth_dir(settings: Settings) -> Path:
    return settings.state_dir / AUTH_DIR


def inbox_prefix(user_key: str) -> str:
    """The inbox prefix of the connection of user ``user_key``: its replies arrive below it."""
    return f"{INBOX}.{user_key}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


_ENCODED_HEADER = _b64(_json(_HEADER))


def encode_jwt(signer: KeyPair, subject: str, name: str, nats: dict[str, Any], *, expires: int | None = None) -> str:
    """A NATS JWT (v2) for ``subject``, issued and signed by ``signer``."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": signer.public_key, "name": name, "sub": subject,
                              "nats": {**nats, "version": 2}}
    if expires is not None:
        claims["exp"] = expires
    claims["jti"] = base64.b32encode(hashlib.sha256(_json(claims)).digest()).decode().rstrip("=")
    signing_input = f"{_ENCODED_HEADER}.{_b64(_json(claims))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode_jwt(token: str, *, issuer: str) -> dict[str, Any]:
    """The claims of ``token``, once its signature by ``issuer`` and its expiry are checked."""
    try:
        header, claims_part, signature = token.split(".")
        claims: dict[str, Any] = json.loads(_unb64(claims_part))
        alg = json.loads(_unb64(header)).get("alg")
    except (ValueError, TypeError) as exc:
        raise ClaimsError(f"not a JWT: {exc}") from exc
    if alg != _HEADER["alg"] or claims.get("iss") != issuer:
        raise ClaimsError(f"the JWT is not issued by {issuer}")
    verify(issuer, f"{header}.{claims_part}".encode(), _unb64(signature))
    if claims.get("exp") and claims["exp"] < time.time():
        raise ClaimsError("the JWT has expired")
    return claims


@dataclass(frozen=True)
class Permissions:
    """A user's publish and subscribe allow lists (empty: no limit); ``responses``: may answer requests."""

    pub: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    responses: bool = False

    def claims(self) -> dict[str, Any]:
        def side(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
            return {k: list(v) for k, v in (("allow", allow), ("deny", deny)) if v}

        claims: dict[str, Any] = {"pub": side(self.pub, self.pub_deny), "sub": side(self.sub, self.sub_deny)}
        if self.responses:
            claims["resp"] = {"max": 1, "ttl": 0}
        return claims


ALL = Permissions()


@dataclass(frozen=True)
class Credentials:
    """A user JWT and the seed of its nkey: what a connection presents (a ``.creds`` file's contents)."""

    jwt: str
    seed: str

    @cached_property
    def key(self) -> KeyPair:
        return KeyPair.from_seed(self.seed)

    @property
    def public_key(self) -> str:
        return self.key.public_key

    @property
    def text(self) -> str:
        return (
            f"-----BEGIN NATS USER JWT-----\n{self.jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{self.seed}\n------END USER NKEY SEED------\n"
        )

    @classmethod
    def parse(cls, text: str) -> Credentials:
        lines = [line.strip() for line in text.splitlines()]
        try:
            jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
            seed = lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
        except (ValueError, IndexError):
            raise ConfigError("not a NATS credentials file (a user JWT and its nkey seed)") from None
        return cls(jwt, seed)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            return cls.parse(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the NATS credentials {path}: {exc.strerror}") from exc

    def write(self, path: Path) -> Path:
        write_secret(path, self.text)
        return path


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (replacing any older file)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Account:
    """The lattice account: it signs the user JWT of every connection."""

    def __init__(self, key: KeyPair) -> None:
        if key.kind is not KeyKind.ACCOUNT:
            raise ConfigError(f"the lattice account seed must be an account (A…) seed, not a {key.kind.name} seed")
        self.key = key
        self.public_key = key.public_key

    @classmethod
    def load(cls, path: Path) -> Account:
        try:
            return cls(KeyPair.from_seed(path.read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read the lattice account seed {path}: {exc.strerror}") from exc

    def user(self, name: str, permissions: Permissions = ALL, *, key: KeyPair | None = None,
             connection_types: tuple[str, ...] = ()) -> Credentials:
        """Credentials for a new user (or ``key``) named ``name``; ``ctl`` and the like see ``name`` in logs.
        ``connection_types`` (e.g. ``LEAFNODE``) limits how the user may connect (empty: any way)."""
        key = key or KeyPair.generate(KeyKind.USER)
        nats = {**_UNLIMITED, **permissions.claims(), "type": "user"}
        if connection_types:
            nats["allowed_connection_types"] = list(connection_types)
        return Credentials(encode_jwt(self.key, key.public_key, name, nats), key.seed)

    def jwt(self, operator: KeyPair, name: str = "lattice", *, jetstream: bool = True) -> str:
        limits = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
        if jetstream:
            limits.update(_JETSTREAM)
        return encode_jwt(operator, self.public_key, name, {"limits": limits, "type": "account"})


@dataclass(frozen=True)
class NatsAuth:
    """The operator, system account and lattice account of an embedded nats-server."""

    operator: KeyPair
    system: Account
    account: Account
    directory: Path

    @classmethod
    def load_or_create(cls, directory: Path) -> NatsAuth:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(
            load_or_create(directory / "operator.nk", KeyKind.OPERATOR),
            Account(load_or_create(directory / "system.nk", KeyKind.ACCOUNT)),
            Account(load_or_create(directory / "account.nk", KeyKind.ACCOUNT)),
            directory,
        )

    @property
    def account_seed_path(self) -> Path:
        return self.directory / "account.nk"

    def server_config(self) -> str:
        """The nats-server config lines putting it in operator mode with a preloaded MEMORY resolver."""
        operator_jwt = encode_jwt(self.operator, self.operator.public_key, "mlcloud",
                                  {"system_account": self.system.public_key, "type": "operator"})
        accounts = {self.system.public_key: self.system.jwt(self.operator, "SYS", jetstream=False),
                    self.account.public_key: self.account.jwt(self.operator)}
        preload = "".join(f'  {key}: "{jwt}"\n' for key, jwt in accounts.items())
        return (f'operator: "{operator_jwt}"\nsystem_account: "{self.system.public_key}"\n'
                f"resolver: MEMORY\nresolver_preload: {{\n{preload}}}\n")

    def write_creds(self) -> tuple[Path, Path]:
        """(host.creds, ctl.creds), freshly signed."""
        host = self.account.user("host").write(self.directory / "host.creds")
        ctl_key = KeyPair.generate(KeyKind.USER)
        ctl = self.account.user("ctl", ctl_permissions(ctl_key.public_key), key=ctl_key)
        return host, ctl.write(self.directory / "ctl.creds")


    def write_board(self, board: str, directory: Path) -> list[Path]:
        """A board's NATS secrets in ``directory`` (0700, files 0600), as its ``state_dir/nats-auth``:
        ``host.creds`` for its host, ``account.nk`` to mint its instances' credentials, ``leaf.creds``
        for its leaf node's connection to the hub (usable only as a leaf connection), and
        ``server.conf`` with the operator-mode lines of :meth:`server_config` for the leaf server."""
        subjects.check_token(board, "board name")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        files = [
            self.account.user(f"host-{board}").write(directory / "host.creds"),
            self.account.user(f"leaf-{board}", connection_types=("LEAFNODE",)).write(directory / "leaf.creds"),
            directory / "account.nk",
            directory / BOARD_SERVER_CONFIG,
        ]
        write_secret(directory / "account.nk", self.account.key.seed + "\n")
        write_secret(directory / BOARD_SERVER_CONFIG, self.server_config())
        return files


def ctl_permissions(user_key: str) -> Permissions:
    """The CLI's and the washboard's: send control requests, follow events, hear replies; nothing else."""
    return Permissions(pub=("wasmbus.ctl.>",), sub=("wasmbus.evt.>", f"{inbox_prefix(user_key)}.>"))


def credentials_for(settings: Settings, default: str = "ctl.creds") -> Credentials | None:
    """The credentials a process connects with: ``settings.nats_creds``, else ``default`` in the state
    dir's ``nats-auth`` if it is there (the CLI and washboard next to ``mlcloud up``), else none."""
    path = settings.nats_creds or auth_dir(settings) / default
    if settings.nats_creds is None and not path.exists():
        return None
    return Credentials.load(path)


def account_for(settings: Settings) -> Account:
    """The lattice account a host mints its instances' credentials with."""
    path = settings.nats_account_seed or auth_dir(settings) / "account.nk"
    if settings.nats_account_seed is None and not path.exists():
        raise ConfigError(
            f"a host needs the lattice account seed to give its instances NATS credentials: pass "
            f"--nats-account-seed FILE (state_dir/{AUTH_DIR}/account.nk of the machine running `mlcloud up`)"
        )
    return Account.load(path)
