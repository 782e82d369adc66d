"""Bindle v1 documents: invoices, parcels, labels and the API's request/response bodies.

The shapes and camelCase keys follow the Rust reference server (deislabs/bindle 0.7–0.9) so its
TOML and JSON read here unchanged. Every struct rejects unknown fields, as the reference's
``deny_unknown_fields`` does; an invoice's version must be strict SemVer. TOML is read with
``tomllib`` and written with ``tomli_w``; JSON goes through msgspec. Anything that fails to decode
raises :class:`~mlcloud.bindle.errors.InvalidInvoice` (or the ``error`` class passed in).
"""

from __future__ import annotations

import enum
import hashlib
import tomllib
from typing import Annotated, Any, TypeVar

import msgspec
import semver
import tomli_w

from mlcloud.bindle.errors import BindleError, BindleInvalidRequest, InvalidInvoice

BINDLE_VERSION_1 = "1.0.0"
TOML_MIME = "application/toml"
JSON_MIME = "application/json"
DEFAULT_MEDIA_TYPE = "application/octet-stream"

# Parcels are stored under their digest, so a digest must never be able to name a path.
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
AnnotationMap = dict[str, str]
FeatureMap = dict[str, dict[str, str]]

T = TypeVar("T")


class _Doc(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """Base of every document: camelCase keys, unknown keys refused, unset options omitted.

    Subclasses are keyword-only too (msgspec does not inherit that), so fields keep the
    reference's order whether or not they have a default.
    """


class SignatureRole(enum.StrEnum):
    CREATOR = "creator"
    PROXY = "proxy"
    HOST = "host"
    APPROVER = "approver"


class Signature(_Doc, kw_only=True):
    by: str
    signature: str  # base64 ed25519 signature of the cleartext (see signing.py)
    key: str  # base64 ed25519 public key
    role: SignatureRole
    at: Annotated[int, msgspec.Meta(ge=0)]  # unix seconds; not part of what is signed


class Label(_Doc, kw_only=True):
    sha256: Sha256
    media_type: str = DEFAULT_MEDIA_TYPE
    name: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    annotations: AnnotationMap | None = None
    feature: FeatureMap | None = None
    origin: str | None = None


class Condition(_Doc, kw_only=True):
    member_of: list[str] | None = None
    requires: list[str] | None = None


class Parcel(_Doc, kw_only=True):
    label: Label
    conditions: Condition | None = None


class Group(_Doc, kw_only=True):
    name: str
    required: bool | None = None
    satisfied_by: str | None = None


class BindleSpec(_Doc, kw_only=True):
    name: str
    version: str
    description: str | None = None
    authors: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("bindle name must not be empty")
        if not is_strict_semver(self.version):
            raise ValueError(f"bindle version {self.version!r} is not strict SemVer")


class Invoice(_Doc, kw_only=True):
    bindle_version: str
    yanked: bool | None = None
    yanked_signature: list[Signature] | None = None
    bindle: BindleSpec
    annotations: AnnotationMap | None = None
    parcel: list[Parcel] | None = None
    group: list[Group] | None = None
    signature: list[Signature] | None = None

    @property
    def name(self) -> str:
        return self.bindle.name

    @property
    def version(self) -> str:
        return self.bindle.version

    @property
    def id(self) -> str:
        """``name/version``, the id routes and the CLI use."""
        return f"{self.bindle.name}/{self.bindle.version}"

    @property
    def canonical_id(self) -> str:
        """sha256 of ``name/version``: the storage key, safe as a path whatever the name is."""
        return canonical_id(self.bindle.name, self.bindle.version)

    @property
    def parcels(self) -> list[Parcel]:
        return list(self.parcel or ())

    @property
    def is_yanked(self) -> bool:
        return bool(self.yanked)

    def label_for(self, sha256: str) -> Label | None:
        for parcel in self.parcel or ():
            if parcel.label.sha256 == sha256:
                return parcel.label
        return None

    def to_toml(self) -> str:
        return to_toml(self)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_toml(cls, text: str | bytes) -> Invoice:
        return decode(text, cls)

    @classmethod
    def from_json(cls, data: str | bytes) -> Invoice:
        return decode(data, cls, content_type=JSON_MIME)


class InvoiceCreateResponse(_Doc, kw_only=True):
    invoice: Invoice
    missing: list[Label] | None = None


class MissingParcelsResponse(_Doc, kw_only=True):
    missing: list[Label]  # required, so an empty list is still written (`missing = []`)


class Matches(_Doc, kw_only=True):
    query: str
    strict: bool
    offset: int
    limit: int
    total: int
    more: bool
    yanked: bool
    # Last, as in the reference: TOML wants the array of tables after the scalars.
    invoices: list[Invoice]


class ErrorResponse(msgspec.Struct, omit_defaults=True):
    error: str


class MessageResponse(msgspec.Struct, omit_defaults=True):
    message: str


def is_strict_semver(version: str) -> bool:
    try:
        semver.Version.parse(version)
    except (ValueError, TypeError):
        return False
    return True


def canonical_id(name: str, version: str) -> str:
    return hashlib.sha256(f"{name}/{version}".encode()).hexdigest()


def parse_id(bindle_id: str) -> tuple[str, str]:
    """Split ``name/version`` at the last ``/``; the version must be strict SemVer."""
    name, sep, version = bindle_id.rpartition("/")
    if not sep or not name or not version:
        raise BindleInvalidRequest(f"invalid bindle id {bindle_id!r}: expected name/version")
    if not is_strict_semver(version):
        raise BindleInvalidRequest(f"invalid bindle id {bindle_id!r}: version is not strict SemVer")
    return name, version


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in (JSON_MIME, "text/json") or mime.endswith("+json")


def wants_json(accept: str | None) -> bool:
    """The reference's negotiation: the first supported type in Accept wins; TOML by default."""
    for item in (accept or "").split(","):
        mime = item.split(";", 1)[0].strip().lower()
        if mime in (JSON_MIME, "text/json"):
            return True
        if mime in (TOML_MIME, "text/toml"):
            return False
    return False


def decode(
    data: str | bytes,
    type_: type[T],
    *,
    content_type: str | None = None,
    error: type[BindleError] = InvalidInvoice,
) -> T:
    """Decode TOML (default) or JSON into ``type_``, raising ``error`` with a readable reason."""
    try:
        if is_json(content_type):
            return msgspec.json.decode(data, type=type_)
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return msgspec.convert(tomllib.loads(text), type_)
    except (msgspec.DecodeError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise error(f"invalid {type_.__name__}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"invalid {type_.__name__}: body is not UTF-8") from exc


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def to_toml(obj: Any) -> str:
    return tomli_w.dumps(msgspec.to_builtins(obj))


def encode(obj: Any, *, as_json: bool) -> bytes:
    return msgspec.json.encode(obj) if as_json else to_toml(obj).encode()
