"""The Bindle subtree of the mlcloud error tree, shared by the server, the client and the CLI.

    BindleError                 502  (defined in mlcloud.errors) root of this subtree
    ├── BindleUnavailable       503  the server could not be reached or did not answer in time
    ├── BindleServerError       500  the server failed (a 5xx answer)
    ├── BindleInvalidRequest    400  a malformed id, sha256 or query
    ├── InvalidInvoice          400  unparseable body, unknown field, bad SemVer, …
    │   ├── SignatureInvalid    400  a signature did not verify or no signer is on the keyring
    │   └── CreateYanked        422  an invoice posted already yanked
    ├── InvalidParcel           400  size or digest mismatch, or not a parcel of that invoice
    ├── ParcelCorrupt           502  a downloaded parcel does not hash to its sha256
    ├── InvoiceNotFound         404
    ├── ParcelNotFound          404
    ├── Yanked                  403  the bindle is yanked (read it with ``yanked=True``)
    └── AlreadyExists           409  the invoice or parcel is already stored (never rewritten)

The server raises these and renders each as ``error = "…"`` with its ``http_status``; the client
rebuilds the same class from the status it gets back, so callers catch one tree either way.
"""

from __future__ import annotations

from http import HTTPStatus

from mlcloud.errors import BindleError

__all__ = [
    "AlreadyExists",
    "BindleError",
    "BindleInvalidRequest",
    "BindleServerError",
    "BindleUnavailable",
    "CreateYanked",
    "InvalidInvoice",
    "InvalidParcel",
    "InvoiceNotFound",
    "ParcelCorrupt",
    "ParcelNotFound",
    "SignatureInvalid",
    "Yanked",
]


class BindleUnavailable(BindleError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class BindleServerError(BindleError):
    http_status = HTTPStatus.INTERNAL_SERVER_ERROR


class BindleInvalidRequest(BindleError):
    http_status = HTTPStatus.BAD_REQUEST


class InvalidInvoice(BindleError):
    http_status = HTTPStatus.BAD_REQUEST


class SignatureInvalid(InvalidInvoice):
    pass


class CreateYanked(InvalidInvoice):
    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class InvalidParcel(BindleError):
    http_status = HTTPStatus.BAD_REQUEST


class ParcelCorrupt(BindleError):
    pass


class InvoiceNotFound(BindleError):
    http_status = HTTPStatus.NOT_FOUND


class ParcelNotFound(BindleError):
    http_status = HTTPStatus.NOT_FOUND


class Yanked(BindleError):
    http_status = HTTPStatus.FORBIDDEN


class AlreadyExists(BindleError):
    # "AlreadyExists" is generic enough that another subtree could want it on the wire.
    kind = "BindleAlreadyExists"
    http_status = HTTPStatus.CONFLICT
