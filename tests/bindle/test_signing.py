"""Invoice signatures: the reference's cleartext, and a server with a keyring refusing bad ones."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import nacl.signing
import pytest

from mlcloud.bindle import AsyncClient, KeyRing, SignatureInvalid, sign_invoice, verify_invoice
from mlcloud.bindle.models import SignatureRole
from mlcloud.bindle.signing import cleartext
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.testing.bindle import BindleServerProcess

from .conftest import make_bindle


def test_cleartext_is_the_reference_layout() -> None:
    b = make_bindle({"a": b"a", "b": b"b"}, name="aricebo", version="1.2.3")
    text = cleartext(b.invoice, "Matt <m@example.com>", SignatureRole.CREATOR).decode()
    assert text == "\n".join(["Matt <m@example.com>", "aricebo", "1.2.3", "creator", "~",
                              b.sha("a"), b.sha("b")])


def test_sign_then_verify_with_nacl_and_nkey_keys() -> None:
    creator = nacl.signing.SigningKey.generate()
    proxy = KeyPair.generate(KeyKind.ACCOUNT)  # mlcloud's own nkeys sign too
    b = make_bindle({"a": b"a"})
    signed = sign_invoice(b.invoice, "creator", creator)
    signed = sign_invoice(signed, "proxy", proxy, role=SignatureRole.PROXY)
    assert [s.role for s in signed.signature] == ["creator", "proxy"]
    verify_invoice(signed, KeyRing().add("creator", creator))

    with pytest.raises(SignatureInvalid, match="already signed"):
        sign_invoice(signed, "again", creator, role=SignatureRole.HOST)
    with pytest.raises(SignatureInvalid, match="keyring"):
        verify_invoice(signed, KeyRing().add("someone else", nacl.signing.SigningKey.generate()))
    with pytest.raises(SignatureInvalid, match="At least one signature"):
        verify_invoice(b.invoice, KeyRing().add("creator", creator))
    only_proxy = sign_invoice(b.invoice, "proxy", proxy, role=SignatureRole.PROXY)
    with pytest.raises(SignatureInvalid, match="Creator"):
        verify_invoice(only_proxy, KeyRing().add("proxy", proxy))


def test_tampering_breaks_the_signature() -> None:
    key = nacl.signing.SigningKey.generate()
    keyring = KeyRing().add("me", key)
    signed = sign_invoice(make_bindle({"a": b"a"}).invoice, "me", key)
    other = make_bindle({"evil": b"evil"}).invoice
    tampered = msgspec.structs.replace(signed, parcel=other.parcel)
    with pytest.raises(SignatureInvalid, match="cannot be verified"):
        verify_invoice(tampered, keyring)
    sig = signed.signature[0]
    for bad in (msgspec.structs.replace(sig, signature="T0JWSU9VU0xZIEZBS0UK"),
                msgspec.structs.replace(sig, key="T0JWSU9VU0xZIEZBS0UK"),
                msgspec.structs.replace(sig, by="someone else")):
        with pytest.raises(SignatureInvalid):
            verify_invoice(msgspec.structs.replace(signed, signature=[bad]), keyring)


def test_keyring_file_round_trips(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    KeyRing().add("me <me@example.com>", key).save(tmp_path / "keyring.toml")
    text = (tmp_path / "keyring.toml").read_text()
    assert 'version = "1.0"' in text and "[[key]]" in text
    loaded = KeyRing.load(tmp_path / "keyring.toml")
    assert loaded.contains(base64.b64encode(bytes(key.verify_key)).decode())


async def test_server_with_keyring_accepts_good_and_refuses_bad_signatures(tmp_path: Path) -> None:
    trusted = nacl.signing.SigningKey.generate()
    stranger = nacl.signing.SigningKey.generate()
    KeyRing().add("trusted", trusted).save(tmp_path / "keyring.toml")
    async with BindleServerProcess(tmp_path / "store", keyring=tmp_path / "keyring.toml") as server, \
            AsyncClient(server.url) as client:
        good = make_bindle({"a": b"a"})
        await client.create_invoice(sign_invoice(good.invoice, "trusted", trusted))
        assert (await client.get_invoice(good.id)).signature[0].by == "trusted"

        unsigned = make_bindle({"b": b"b"})
        with pytest.raises(SignatureInvalid) as info:
            await client.create_invoice(unsigned.invoice)
        assert info.value.details["status"] == 400

        with pytest.raises(SignatureInvalid):
            await client.create_invoice(sign_invoice(unsigned.invoice, "stranger", stranger))

        signed = sign_invoice(make_bindle({"c": b"c"}).invoice, "trusted", trusted)
        forged = msgspec.structs.replace(signed, parcel=make_bindle({"d": b"d"}).invoice.parcel)
        with pytest.raises(SignatureInvalid):
            await client.create_invoice(forged)


async def test_unauthenticated_server_accepts_unsigned_invoices(server: BindleServerProcess) -> None:
    async with AsyncClient(server.url) as client:
        b = make_bindle({"a": b"a"})
        assert (await client.create_invoice(b.invoice)).missing
