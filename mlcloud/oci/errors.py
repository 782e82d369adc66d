"""The artifact subtree of mlcloud's error tree (the root lives in :mod:`mlcloud.errors`).

    ClaimsError                       403  an artifact failed verification; nothing unverified runs
    ├── MalformedToken                403  not a JWT, bad base64/JSON, wrong header, missing claims
    ├── InvalidSignature              403  the token's signature does not verify with its issuer key
    ├── TokenExpired                  403  ``exp`` passed or ``nbf`` not reached
    ├── HashMismatch                  403  bytes differ from the digest that names them
    ├── SubjectMismatch               403  claims disagree with the component they came with
    ├── UntrustedIssuer               403  the issuer account is not trusted (mlcloud.trust); details: issuer
    └── UnsafeArchive                 403  the layer holds links, absolute or ``..`` paths, or too much
    ArtifactError                     502  building, pushing or pulling an OCI artifact
    ├── BuildFailed                   500  the component folder cannot be packaged
    ├── PushFailed                    502  the registry refused or could not be reached
    ├── PullFailed                    502  the registry could not be reached and nothing is cached
    │   └── ArtifactNotFound          404  the registry has no such tag or digest
    └── InvalidReference              400  not an OCI reference
    HostError
    ├── RegistryNotInstalled          500  no ``docker-registry`` binary
    └── RegistryStartFailed           500  the embedded registry exited or never answered
    PortInUse                              (from mlcloud.errors) the registry's port is taken

Each class registers its ``kind`` on definition, so these cross the lattice like the core ones.
"""

from __future__ import annotations

from http import HTTPStatus

from mlcloud.errors import ArtifactError, ClaimsError, HostError


class MalformedToken(ClaimsError):
    pass


class InvalidSignature(ClaimsError):
    pass


class TokenExpired(ClaimsError):
    pass


class HashMismatch(ClaimsError):
    pass


class SubjectMismatch(ClaimsError):
    pass


class UntrustedIssuer(ClaimsError):
    pass


class UnsafeArchive(ClaimsError):
    pass


class BuildFailed(ArtifactError):
    http_status = HTTPStatus.INTERNAL_SERVER_ERROR


class PushFailed(ArtifactError):
    pass


class PullFailed(ArtifactError):
    pass


class ArtifactNotFound(PullFailed):
    http_status = HTTPStatus.NOT_FOUND


class InvalidReference(ArtifactError):
    http_status = HTTPStatus.BAD_REQUEST


class RegistryNotInstalled(HostError):
    pass


class RegistryStartFailed(HostError):
    pass
