"""Bindle, the model store of the lattice: a v1 server, clients, documents and signatures.

Compatible with the Bindle v1 HTTP API of the Rust reference (deislabs/bindle 0.7–0.9), so the
real ``bindle`` server or CLI can stand in for either side. ``mlcloud bindle …`` is the CLI.
"""

from mlcloud.bindle.client import AsyncClient, PushResult, load_invoice_dir
from mlcloud.bindle.errors import (
    AlreadyExists,
    BindleError,
    BindleInvalidRequest,
    BindleServerError,
    BindleUnavailable,
    CreateYanked,
    InvalidInvoice,
    InvalidParcel,
    InvoiceNotFound,
    ParcelCorrupt,
    ParcelNotFound,
    SignatureInvalid,
    Yanked,
)
from mlcloud.bindle.models import (
    BindleSpec,
    Condition,
    Group,
    Invoice,
    InvoiceCreateResponse,
    Label,
    Matches,
    Parcel,
    Signature,
    SignatureRole,
    canonical_id,
    parse_id,
)
from mlcloud.bindle.server import create_app, serve
from mlcloud.bindle.signing import KeyRing, sign_invoice, verify_invoice

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "BindleError",
    "BindleInvalidRequest",
    "BindleServerError",
    "BindleSpec",
    "BindleUnavailable",
    "Condition",
    "CreateYanked",
    "Group",
    "InvalidInvoice",
    "InvalidParcel",
    "Invoice",
    "InvoiceCreateResponse",
    "InvoiceNotFound",
    "KeyRing",
    "Label",
    "Matches",
    "Parcel",
    "ParcelCorrupt",
    "ParcelNotFound",
    "PushResult",
    "Signature",
    "SignatureInvalid",
    "SignatureRole",
    "Yanked",
    "canonical_id",
    "create_app",
    "load_invoice_dir",
    "parse_id",
    "serve",
    "sign_invoice",
    "verify_invoice",
]
