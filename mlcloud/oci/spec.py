"""What an mlcloud artifact looks like in a registry, and how its references are spelled.

An artifact is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``)::

    config   application/vnd.mlcloud.component.config.v1+json   component.toml as JSON
    layers   [application/vnd.mlcloud.component.layer.v1.tar+gzip]  the folder, deterministic tar.gz
    annotations
      dev.mlcloud.claims.jwt            the claims token (see mlcloud.oci.claims)
      org.opencontainers.image.title    component name
      org.opencontainers.image.version  component version

The token rides in a manifest annotation, not in a layer of its own: a pull reads the manifest
anyway, so verifying costs no extra round trip, and the manifest digest (what hosts cache and pin
by) covers the token too. The token names the layer's sha256, so it cannot be moved to other code.

References: ``[registry/]repository[:tag][@sha256:hex]``; no registry means the configured one,
no tag and no digest means ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mlcloud.oci.errors import InvalidReference

LAYER_MEDIA_TYPE = "application/vnd.mlcloud.component.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.mlcloud.component.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CLAIMS_ANNOTATION = "dev.mlcloud.claims.jwt"
TITLE_ANNOTATION = "org.opencontainers.image.title"
VERSION_ANNOTATION = "org.opencontainers.image.version"

DEFAULT_TAG = "latest"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_PART = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, default_registry: str) -> Reference:
        rest, _, digest = text.strip().partition("@")
        if digest and not is_digest(digest):
            raise InvalidReference(f"{text!r}: digest must be sha256:<64 hex digits>")
        parts = rest.split("/")
        registry = default_registry
        first = parts[0]
        if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
            registry = first
            parts = parts[1:]
        tag = None
        name, colon, maybe_tag = parts[-1].partition(":")
        if colon:
            if not _TAG.match(maybe_tag):
                raise InvalidReference(f"{text!r}: invalid tag {maybe_tag!r}")
            tag = maybe_tag
            parts[-1] = name
        if not parts or not all(_REPO_PART.match(p) for p in parts):
            raise InvalidReference(
                f"{text!r} is not an OCI reference like 127.0.0.1:5000/mlcloud/preprocess:0.1.0"
            )
        if tag is None and not digest:
            tag = DEFAULT_TAG
        return cls(registry, "/".join(parts), tag, digest or None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    @property
    def tag_key(self) -> str:
        """The mutable name a tag index maps to a digest."""
        return f"{self.registry}/{self.repository}:{self.tag}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
