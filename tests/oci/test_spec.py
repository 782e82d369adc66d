"""OCI references as hosts and app manifests spell them."""

from __future__ import annotations

import pytest

from mlcloud.oci.errors import InvalidReference
from mlcloud.oci.spec import Reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:5000/mlcloud/preprocess:0.1.0", Reference("localhost:5000", "mlcloud/preprocess", "0.1.0")),
        (f"127.0.0.1:5000/mlcloud/preprocess@{DIGEST}",
         Reference("127.0.0.1:5000", "mlcloud/preprocess", None, DIGEST)),
        (f"reg.example.com/a/b:1@{DIGEST}", Reference("reg.example.com", "a/b", "1", DIGEST)),
        ("mlcloud/api:0.2.0", Reference("127.0.0.1:5000", "mlcloud/api", "0.2.0")),
        ("localhost/mlcloud/api", Reference("localhost", "mlcloud/api", "latest")),
    ],
)
def test_references_parse(text: str, expected: Reference) -> None:
    ref = Reference.parse(text, "127.0.0.1:5000")
    assert ref == expected
    assert Reference.parse(str(ref), "elsewhere:1") == ref


@pytest.mark.parametrize("text", ["", "Mlcloud/API:1", "a/b@sha256:xyz", "a/b:bad tag", "a//b"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(text, "127.0.0.1:5000")
