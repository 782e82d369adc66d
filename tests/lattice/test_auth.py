"""NATS authentication against a real nats-server in operator mode (mlcloud/lattice/auth.py)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import nats
import nats.errors
import pytest

from mlcloud.errors import ClaimsError, LatticeUnavailable
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.lattice.auth import Credentials, NatsAuth, Permissions, decode_jwt, encode_jwt
from mlcloud.lattice.connect import connect
from mlcloud.lattice.nats_server import NatsServer


async def test_an_anonymous_client_is_refused(nats_server: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)


async def test_a_user_of_another_account_is_refused(nats_server: NatsServer) -> None:
    stranger = NatsAuth.load_or_create(Path(nats_server.store_dir) / "stranger").account.user("me")
    with pytest.raises(LatticeUnavailable, match="Authorization Violation"):
        await connect(nats_server.url, name="stranger", credentials=stranger, reconnect=False, timeout=3)


async def test_the_server_enforces_a_users_permissions(nats_server: NatsServer, nats_auth: NatsAuth) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    user = nats_auth.account.user("narrow", Permissions(pub=("allowed.>",), sub=("allowed.>",)))
    nc = await connect(nats_server.url, name="narrow", credentials=user, error_cb=on_error)
    try:
        await nc.publish("allowed.x", b"")
        await nc.publish("denied.x", b"")
        await nc.subscribe("denied.y")
        async with asyncio.timeout(5):  # the server's -ERR lines come to the error callback
            while len(errors) < 2:
                await asyncio.sleep(0.02)
    finally:
        await nc.close()
    text = " ".join(str(e) for e in errors)
    assert 'publish to "denied.x"' in text and 'subscription to "denied.y"' in text
    assert "allowed.x" not in text


def test_creds_files_are_private_and_parse_back(tmp_path: Path) -> None:
    auth = NatsAuth.load_or_create(tmp_path / "nats-auth")
    host, ctl = auth.write_creds()
    for path in (host, ctl, *(tmp_path / "nats-auth").glob("*.nk")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "nats-auth").stat().st_mode) == 0o700
    creds = Credentials.load(ctl)
    claims = decode_jwt(creds.jwt, issuer=auth.account.public_key)
    assert claims["sub"] == creds.public_key and claims["nats"]["type"] == "user"
    assert claims["nats"]["pub"] == {"allow": ["wasmbus.ctl.>"]}
    assert NatsAuth.load_or_create(tmp_path / "nats-auth").account.public_key == auth.account.public_key  # kept


def test_a_jwt_signed_by_another_key_or_expired_is_refused() -> None:
    account, other = KeyPair.generate(KeyKind.ACCOUNT), KeyPair.generate(KeyKind.ACCOUNT)
    token = encode_jwt(other, "UX", "x", {"type": "user"})
    with pytest.raises(ClaimsError):
        decode_jwt(token, issuer=account.public_key)
    header, _, signature = encode_jwt(account, "UX", "x", {}).split(".")
    tampered = encode_jwt(account, "UOTHER", "x", {}).split(".")[1]  # another subject, the first's signature
    with pytest.raises(ClaimsError, match="bad signature"):
        decode_jwt(f"{header}.{tampered}.{signature}", issuer=account.public_key)
    with pytest.raises(ClaimsError, match="expired"):
        decode_jwt(encode_jwt(account, "UX", "x", {}, expires=1), issuer=account.public_key)
