"""Invoice documents: the reference's TOML reads unchanged, and invalid ones are refused."""

from __future__ import annotations

import pytest

from mlcloud.bindle import InvalidInvoice, Invoice, canonical_id, parse_id
from mlcloud.bindle.errors import BindleInvalidRequest
from mlcloud.bindle.models import Matches, decode, to_toml
from mlcloud.bindle.versions import version_matches

SHA_A = "a" * 64
SHA_B = "b" * 64

REFERENCE_INVOICE = f"""
bindleVersion = "1.0.0"

[bindle]
name = "mymodel"
version = "0.1.0"
authors = ["m butcher"]
description = "a model"

[annotations]
key = "value"

[[parcel]]
[parcel.label]
sha256 = "{SHA_A}"
mediaType = "application/octet-stream"
name = "model.onnx"
size = 123_456
[parcel.label.annotations]
role = "model"
[parcel.conditions]
memberOf = ["server"]
requires = ["metadata"]

[[parcel]]
[parcel.label]
sha256 = "{SHA_B}"
mediaType = "application/json"
name = "metadata.json"
size = 42

[[group]]
name = "server"
satisfiedBy = "allOf"
required = true
"""


def test_reference_invoice_round_trips_through_toml_and_json() -> None:
    invoice = Invoice.from_toml(REFERENCE_INVOICE)
    assert invoice.id == "mymodel/0.1.0"
    assert invoice.parcels[0].conditions.member_of == ["server"]
    assert invoice.group[0].satisfied_by == "allOf"
    assert invoice.label_for(SHA_B).media_type == "application/json"
    assert Invoice.from_toml(invoice.to_toml()) == invoice
    assert Invoice.from_json(invoice.to_json()) == invoice
    assert b'"bindleVersion"' in invoice.to_json() and b'"mediaType"' in invoice.to_json()


def test_canonical_id_is_sha256_of_name_slash_version() -> None:
    # Value from the reference's Id::sha() for "mymodel/0.1.0".
    import hashlib

    assert canonical_id("mymodel", "0.1.0") == hashlib.sha256(b"mymodel/0.1.0").hexdigest()
    assert Invoice.from_toml(REFERENCE_INVOICE).canonical_id == canonical_id("mymodel", "0.1.0")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.replace('version = "0.1.0"', 'version = "0.1"'), "SemVer"),
        (lambda t: t.replace('version = "0.1.0"', 'version = "v0.1.0"'), "SemVer"),
        (lambda t: t.replace('version = "0.1.0"', 'version = "01.1.0"'), "SemVer"),
        (lambda t: t.replace('bindleVersion = "1.0.0"', ""), "bindleVersion"),
        (lambda t: t.replace('name = "mymodel"', 'name = ""'), "empty"),
        (lambda t: t.replace("size = 42", "size = 42\ncolour = 'red'"), "unknown field"),
        (lambda t: t + "\nextra = 1\n", "unknown field"),
        (lambda t: t.replace(SHA_B, "../../etc/passwd"), "sha256"),
        (lambda t: t.replace("size = 42", "size = -1"), "size"),
        (lambda t: t + "\n[[[", "invalid"),
    ],
)
def test_invalid_invoices_are_refused(change, reason) -> None:
    with pytest.raises(InvalidInvoice) as info:
        Invoice.from_toml(change(REFERENCE_INVOICE))
    assert reason.lower() in info.value.message.lower() or "invalid" in info.value.message


def test_json_invoice_missing_fields_is_refused() -> None:
    with pytest.raises(InvalidInvoice):
        Invoice.from_json(b'{"bindle": {"name": "x", "version": "1.0.0"}}')
    with pytest.raises(InvalidInvoice):
        Invoice.from_json(b"not json")


def test_ids_split_at_the_last_slash_and_need_semver() -> None:
    assert parse_id("example.com/a/long/path/foo/1.10.0-rc.1") == (
        "example.com/a/long/path/foo", "1.10.0-rc.1")
    for bad in ("foo/", "1.0.0", "foo/1.0", "/1.0.0"):
        with pytest.raises(BindleInvalidRequest):
            parse_id(bad)


def test_empty_lists_are_still_written_in_toml() -> None:
    text = to_toml(Matches(query="", strict=False, offset=0, limit=50, total=0, more=False,
                           yanked=False, invoices=[]))
    assert decode(text, Matches).invoices == []


@pytest.mark.parametrize("req", ["= 1.2.3", "1.2.3", "^1.1", "~1.2", "", ">=1.0.0 <2", "1.x",
                                 "*", "1.0.0 - 1.3", "<1.0.0 || >=1.2.0", ">= 1.2"])
def test_version_filters_follow_npm_rules(req: str) -> None:
    assert version_matches("1.2.3", req)


@pytest.mark.parametrize("req", ["2", "%^&%^&%", "1.2.4", "^1.3", "<1.2.3", ">1.2", "~1.1"])
def test_version_filters_that_do_not_match(req: str) -> None:
    assert not version_matches("1.2.3", req)
