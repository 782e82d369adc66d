"""Invoice signatures: the reference's cleartext, a server with a keyring refusing bad ones, the
host signature the server adds, and account nkeys as creators."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import nacl.signing
import pytest

from mlcloud.bindle import AsyncClient, KeyRing, SignatureInvalid, sign_invoice, verify_invoice
from mlcloud.bindle.models import SignatureRole
from mlcloud.bindle.signing import cleartext, keyring_of_accounts, sign_with_nkey
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
    with pytest.raises(SignatureInvalid, match="not signed by a trusted creator: it has no signature"):
        verify_invoice(b.invoice, KeyRing().add("creator", creator))
    only_proxy = sign_invoice(b.invoice, "proxy", proxy, role=SignatureRole.PROXY)
    with pytest.raises(SignatureInvalid, match="no creator signature"):
        verify_invoice(only_proxy, KeyRing().add("proxy", proxy))


def test_tampering_breaks_the_signature() -> None:
    key = nacl.signing.SigningKey.generate()
    keyring = KeyRing().add("me", key)
    signed = sign_invoice(make_bindle({"a": b"a"}).invoice, "me", key)
    other = make_bindle({"evil": b"evil"}).invoice
    tampered = msgspec.structs.replace(signed, parcel=other.parcel)
    with pytest.raises(SignatureInvalid, match="changed after it was signed"):
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


async def test_the_server_adds_its_host_signature_to_every_invoice_it_stores(tmp_path: Path) -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    async with BindleServerProcess(tmp_path / "store") as server, AsyncClient(server.url) as client:
        host_keys = await client.host_keys()
        (host_key,) = host_keys.key
        assert host_key.roles == [SignatureRole.HOST]
        pushed = make_bindle({"a": b"a"})
        await client.push(pushed.invoice, pushed.data, creator=account)
        stored = await client.get_invoice(pushed.id)
        creator, host = stored.signature
        assert (creator.role, creator.by) == (SignatureRole.CREATOR, account.public_key)
        assert (host.role, host.key) == (SignatureRole.HOST, host_key.key)
        # The creator's keyring is enough: the host's signature verifies but need not be known.
        verify_invoice(stored, keyring_of_accounts([account.public_key]))

        unsigned = make_bindle({"b": b"b"})
        await client.create_invoice(unsigned.invoice)
        assert [s.role for s in (await client.get_invoice(unsigned.id)).signature] == [SignatureRole.HOST]

        await server.arestart()  # the host key is kept in the data directory, private
        assert await client.host_keys() == host_keys
    assert (tmp_path / "store" / "host.nk").stat().st_mode & 0o777 == 0o600


async def test_a_server_without_keyring_still_refuses_broken_signatures(server: BindleServerProcess) -> None:
    key = nacl.signing.SigningKey.generate()
    signed = sign_invoice(make_bindle({"a": b"a"}).invoice, "me", key)
    forged = msgspec.structs.replace(signed, parcel=make_bindle({"evil": b"evil"}).invoice.parcel)
    async with AsyncClient(server.url) as client:
        with pytest.raises(SignatureInvalid, match="changed after it was signed") as info:
            await client.create_invoice(forged)
        assert info.value.details["status"] == 400


def test_account_nkeys_become_base64_keyring_entries() -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    ring = keyring_of_accounts([account.public_key, account.public_key])
    assert [(k.label, k.roles) for k in ring.key] == [(account.public_key, [SignatureRole.CREATOR])]
    assert ring.contains(base64.b64encode(bytes(account.signing_key.verify_key)).decode())
    signed = sign_with_nkey(make_bindle({"a": b"a"}).invoice, account)
    assert sign_with_nkey(signed, account) is signed  # signing twice is a no-op
    verify_invoice(signed, ring)


async def test_pushing_signed_onto_an_unsigned_copy_says_how_to_fix_it(server: BindleServerProcess) -> None:
    account = KeyPair.generate(KeyKind.ACCOUNT)
    b = make_bindle({"a": b"a"})
    async with AsyncClient(server.url) as client:
        await client.push(b.invoice, b.data)
        with pytest.raises(SignatureInvalid, match="already stored without a creator signature"):
            await client.push(b.invoice, b.data, creator=account)
        other = make_bindle({"c": b"c"})
        await client.push(other.invoice, other.data, creator=account)
        assert (await client.push(other.invoice, other.data, creator=account)).nothing_to_do
