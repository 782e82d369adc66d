"""The one boundary between mlcloud and oras/requests: every registry call goes through here.

``RegistryClient`` is oras's client (``oras.provider.Registry``, alias ``OrasClient``) with two
changes, both for hosts that must start from their cache when the registry is down:

* every request has a timeout (oras passes none, so a hung registry would hang a host);
* no retry loop: oras's ``do_request`` sleeps 3+5+11+29+83 s on a refused connection before
  giving up, which would turn "registry down, use the cache" into a two-minute stall.

The functions below add what oras lacks for verified pulls: the raw manifest bytes (oras
returns parsed JSON, so its digest could not be checked) and blob downloads that hash the
bytes as they arrive. Errors from requests and oras become PullFailed/ArtifactNotFound here.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import requests
from oras.provider import Registry

from mlcloud.oci.errors import ArtifactNotFound, HashMismatch, PullFailed
from mlcloud.oci.spec import MANIFEST_MEDIA_TYPE, Reference

DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 16


class _TimeoutSession(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout
        # Same as oras: ignore cookies, some registries take them as a browser's.
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


class RegistryClient(Registry):
    """oras's client with request timeouts and without its sleeping retry loop."""

    # The undecorated method: authentication (401 → token → retry) kept, sleep-and-retry dropped.
    do_request = getattr(Registry.do_request, "__wrapped__", Registry.do_request)

    def __init__(self, hostname: str, insecure: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(hostname=hostname, insecure=insecure)
        self.session = _TimeoutSession(timeout)
        self.auth.session = self.session


def _request(client: RegistryClient, method: str, url: str, ref: Reference, **kwargs: Any) -> requests.Response:
    try:
        response: requests.Response = client.do_request(url, method, **kwargs)  # oras's decorator hides the type
        return response
    except requests.RequestException as exc:
        raise PullFailed(f"registry {ref.registry} unreachable while fetching {ref}: {exc}") from exc
    except ValueError as exc:  # oras: "Cannot respond to request for authentication."
        raise PullFailed(f"registry {ref.registry} refused {ref}: {exc}") from exc


def _check(response: requests.Response, ref: Reference, what: str) -> None:
    if response.status_code == 404:
        raise ArtifactNotFound(f"{ref}: {what} not found in registry {ref.registry}")
    if response.status_code != 200:
        raise PullFailed(f"{ref}: registry {ref.registry} answered {response.status_code} for {what}")


def _manifest_url(client: RegistryClient, ref: Reference) -> str:
    return f"{client.prefix}://{ref.registry}/v2/{ref.repository}/manifests/{ref.digest or ref.tag}"


def resolve_digest(client: RegistryClient, ref: Reference) -> str:
    """The manifest digest ``ref`` names now (a HEAD: no body is downloaded)."""
    # distribution answers 404 for an OCI manifest unless the Accept header names its type.
    response = _request(client, "HEAD", _manifest_url(client, ref), ref, headers={"Accept": MANIFEST_MEDIA_TYPE})
    _check(response, ref, "manifest")
    digest = response.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        raise PullFailed(f"{ref}: registry {ref.registry} sent no Docker-Content-Digest for the manifest")
    return digest


def fetch_manifest(client: RegistryClient, ref: Reference) -> tuple[bytes, str]:
    """The manifest's exact bytes and their digest (checked against ``ref.digest`` if given)."""
    response = _request(client, "GET", _manifest_url(client, ref), ref, headers={"Accept": MANIFEST_MEDIA_TYPE})
    _check(response, ref, "manifest")
    body = response.content
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if ref.digest and digest != ref.digest:
        raise HashMismatch(f"{ref}: the registry's manifest hashes to {digest}")
    return body, digest


def fetch_blob(client: RegistryClient, ref: Reference, digest: str, dest: Path) -> None:
    """Download blob ``digest`` to ``dest``; refuse it unless its bytes hash to ``digest``."""
    url = f"{client.prefix}://{ref.registry}/v2/{ref.repository}/blobs/{digest}"
    # A unique name: two pulls of one blob may race, in threads or in processes.
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    hasher = hashlib.sha256()
    response = _request(client, "GET", url, ref, stream=True)
    try:
        with response:
            _check(response, ref, f"blob {digest}")
            with tmp.open("wb") as f:
                for chunk in response.iter_content(_CHUNK):
                    hasher.update(chunk)
                    f.write(chunk)
    except requests.RequestException as exc:
        tmp.unlink(missing_ok=True)
        raise PullFailed(f"{ref}: download of {digest} broke off: {exc}") from exc
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        tmp.unlink(missing_ok=True)
        raise HashMismatch(f"{ref}: blob {digest} from {ref.registry} hashes to {actual}; refused")
    os.replace(tmp, dest)
