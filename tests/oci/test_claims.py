"""Claims tokens: JWTs signed by an account nkey, verified before anything runs."""

from __future__ import annotations

import base64
import json
import time

import pytest

from mlcloud.errors import ClaimsError, error_from_wire
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.oci.claims import Claims, decode_unverified, sign, verify_token
from mlcloud.oci.errors import InvalidSignature, MalformedToken, TokenExpired


def _claims(account: KeyPair, **changes: object) -> Claims:
    values: dict[str, object] = dict(
        issuer=account.public_key,
        subject=KeyPair.generate(KeyKind.ACTOR).public_key,
        name="echo",
        version="0.1.0",
        revision=1,
        hash="ab" * 32,
        caps=("wasmcloud:mlinference",),
        call_alias="echo",
    )
    values.update(changes)
    return Claims(**values)  # type: ignore[arg-type]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_signed_claims_verify_and_round_trip() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    claims = _claims(account)
    token = sign(claims, account)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "Ed25519", "typ": "jwt"}
    assert verify_token(token) == claims
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["wascap"]["caps"] == ["wasmcloud:mlinference"]
    assert payload["wascap"]["hash"] == "ab" * 32


def test_changed_payload_breaks_the_signature() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    token = sign(_claims(account), account)
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["wascap"]["caps"].append("wasmcloud:httpserver")
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify_token(f"{head}.{_b64(data)}.{sig}")


def test_issuer_swapped_for_another_account_is_refused() -> None:
    account, other = KeyPair.generate(KeyKind.ACCOUNT), KeyPair.generate(KeyKind.ACCOUNT)
    token = sign(_claims(account), account)
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["iss"] = other.public_key
    with pytest.raises(InvalidSignature):
        verify_token(f"{head}.{_b64(data)}.{sig}")


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", _b64({"typ": "jwt", "alg": "HS256"}) + "." + _b64({}) + ".AA"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(MalformedToken):
        verify_token(token)


def test_issuer_must_be_an_account_and_subject_a_component() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    host = KeyPair.generate(KeyKind.HOST)
    with pytest.raises(ClaimsError, match="account key"):
        sign(_claims(host, issuer=host.public_key), host)
    token = sign(_claims(account, subject=host.public_key), account)
    with pytest.raises(MalformedToken, match="actor .* or provider"):
        verify_token(token)


def test_expired_and_not_yet_valid_tokens_are_refused() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    now = int(time.time())
    with pytest.raises(TokenExpired):
        verify_token(sign(_claims(account, expires=now - 3600), account))
    with pytest.raises(TokenExpired):
        verify_token(sign(_claims(account, not_before=now + 3600), account))
    assert verify_token(sign(_claims(account, expires=now + 3600), account)).expires == now + 3600


def test_decode_unverified_reads_without_checking() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    token = sign(_claims(account), account)
    assert decode_unverified(token[:-4] + "AAAA").name == "echo"


def test_claims_errors_cross_the_lattice_as_themselves() -> None:
    err = error_from_wire(InvalidSignature("bad").to_wire())
    assert type(err) is InvalidSignature and isinstance(err, ClaimsError)
    assert err.http_status == 403
