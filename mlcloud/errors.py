"""The whole error tree of mlcloud, and how an error crosses the lattice.

    MLCloudError                      500  root; every error mlcloud raises on purpose
    ├── ConfigError                   500  bad settings, manifest or component folder
    ├── RequestError                  400  the caller sent something we cannot use
    │   ├── MalformedMessage          400  undecodable msgpack / missing fields on an RPC subject
    │   ├── Unauthorized              401  a missing or wrong API key or token (WWW-Authenticate: Bearer)
    │   ├── NotFound                  404  unknown route or thing
    │   ├── MethodNotAllowed          405
    │   ├── PayloadTooLarge           413
    │   └── UnsupportedMediaType      415
    ├── LatticeError                  502  the lattice could not carry a call
    │   ├── RpcTimeout                504  (also a builtin TimeoutError)
    │   ├── NoResponders              503  nobody subscribes to the subject
    │   ├── LatticeUnavailable        503  the NATS connection cannot carry the call now
    │   │   └── InstanceDied          503  the instance serving the call died under it (retryable)
    │   ├── RemoteError               502  an error of a kind this side does not know
    │   ├── UnknownOperation          404  the component has no handler for the operation
    │   ├── LinkNotFound              503  the actor has no link for that contract/link name
    │   └── CapabilityNotClaimed      403  the actor's claims do not name that contract
    ├── HostError                     500  starting, stopping or supervising components
    │   ├── ComponentNotFound         404
    │   └── PortInUse                 500  a server we start cannot bind its port
    ├── ClaimsError                   403  an artifact failed verification; nothing unverified runs
    ├── ArtifactError                 502  building, pushing or pulling an OCI artifact
    ├── BindleError                   502  (subtree in mlcloud.bindle)
    └── InferenceError                500  the mlinference contract's error kinds
        ├── ContextNotFound           404  unknown model
        ├── ModelLoading              503  model still loading (Retry-After)
        ├── InvalidModel              503  the model failed to load; message says why
        ├── InvalidEncoding           400
        ├── CorruptInputTensor        400
        ├── InferenceRuntimeError     500  kind "RuntimeError"
        ├── OnnxError                 500
        └── TensorflowError           500

Every class has a ``kind`` (its wire name, the class name unless set) and an ``http_status``;
:meth:`MLCloudError.to_http` is the one place that turns an error into an HTTP answer (status,
headers, body), which each HTTP server only adapts to its own response type. Errors cross NATS
as ``{kind, message, details}`` (:meth:`MLCloudError.to_wire`) and are rebuilt into the same
class on the other side (:func:`error_from_wire`); subclasses defined in other modules register
themselves, so a subtree may live beside the code that raises it.
"""

from __future__ import annotations

import builtins
from http import HTTPStatus
from typing import Any, ClassVar, NamedTuple

_KINDS: dict[str, type[MLCloudError]] = {}

RETRY_AFTER_SECONDS = 1  # what a 503 asks a client to wait before it tries again


class HttpErrorReply(NamedTuple):
    """An error as an HTTP answer: status, headers and the JSON body (DESIGN §4)."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @classmethod
    def of(cls, status: int, kind: str, message: str, *, allow: str | None = None,
           retry_after: int = RETRY_AFTER_SECONDS) -> HttpErrorReply:
        """``Retry-After`` on every 503, ``WWW-Authenticate`` on every 401 and ``Allow`` on a 405
        that knows its methods."""
        headers: dict[str, str] = {}
        if status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers["Retry-After"] = str(retry_after)
        if status == HTTPStatus.METHOD_NOT_ALLOWED and allow:
            headers["Allow"] = allow
        return cls(status, headers, {"error": {"kind": kind, "message": message}})


class MLCloudError(Exception):
    """Root of every error mlcloud raises on purpose."""

    # Not a ClassVar: a RemoteError of a kind this process does not know keeps that kind per instance.
    kind: str = "MLCloudError"
    http_status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = cls.__name__
        _KINDS.setdefault(cls.kind, cls)

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.kind)
        self.message = message or self.kind
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "details": self.details}

    def to_http(self) -> HttpErrorReply:
        """This error as an HTTP answer; details ``allow`` (methods of a 405) and ``retry_after``
        (seconds, of a 503) become headers."""
        allow = self.details.get("allow")
        return HttpErrorReply.of(int(self.http_status), self.kind, self.message,
                            allow=str(allow) if allow else None,
                            retry_after=int(self.details.get("retry_after") or RETRY_AFTER_SECONDS))


_KINDS[MLCloudError.kind] = MLCloudError


def error_from_wire(data: Any) -> MLCloudError:
    """Rebuild an error sent by :meth:`MLCloudError.to_wire` on another process."""
    if not isinstance(data, dict):
        return RemoteError(f"malformed error reply: {data!r}")
    kind = str(data.get("kind") or "RemoteError")
    message = str(data.get("message") or kind)
    details = data.get("details") or {}
    cls = _KINDS.get(kind)
    if cls is None:
        err: MLCloudError = RemoteError(message, **details)
        err.kind = kind  # keep the remote kind visible to callers and HTTP bodies
        return err
    return cls(message, **details)


class ConfigError(MLCloudError):
    pass


class RequestError(MLCloudError):
    http_status = HTTPStatus.BAD_REQUEST


class MalformedMessage(RequestError):
    pass


class Unauthorized(RequestError):
    http_status = HTTPStatus.UNAUTHORIZED


class NotFound(RequestError):
    http_status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(RequestError):
    http_status = HTTPStatus.METHOD_NOT_ALLOWED


class PayloadTooLarge(RequestError):
    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(RequestError):
    http_status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class LatticeError(MLCloudError):
    http_status = HTTPStatus.BAD_GATEWAY


class RpcTimeout(LatticeError, builtins.TimeoutError):
    http_status = HTTPStatus.GATEWAY_TIMEOUT


class NoResponders(LatticeError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class LatticeUnavailable(LatticeError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class InstanceDied(LatticeUnavailable):
    """A call's server (or a stage of its chain) died while it was in flight; made again, it may succeed."""


class RemoteError(LatticeError):
    pass


class UnknownOperation(LatticeError):
    http_status = HTTPStatus.NOT_FOUND


class LinkNotFound(LatticeError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class CapabilityNotClaimed(LatticeError):
    http_status = HTTPStatus.FORBIDDEN


class HostError(MLCloudError):
    pass


class ComponentNotFound(HostError):
    http_status = HTTPStatus.NOT_FOUND


class PortInUse(HostError):
    pass


class ClaimsError(MLCloudError):
    http_status = HTTPStatus.FORBIDDEN


class ArtifactError(MLCloudError):
    http_status = HTTPStatus.BAD_GATEWAY


class BindleError(MLCloudError):
    http_status = HTTPStatus.BAD_GATEWAY


class InferenceError(MLCloudError):
    pass


class ContextNotFound(InferenceError):
    http_status = HTTPStatus.NOT_FOUND


class ModelLoading(InferenceError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class InvalidModel(InferenceError):
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class InvalidEncoding(InferenceError):
    http_status = HTTPStatus.BAD_REQUEST


class CorruptInputTensor(InferenceError):
    http_status = HTTPStatus.BAD_REQUEST


class InferenceRuntimeError(InferenceError):
    kind = "RuntimeError"


class OnnxError(InferenceError):
    pass


class TensorflowError(InferenceError):
    pass
