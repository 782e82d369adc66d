"""The sha256 of a file, streamed: the one digest every part (Bindle, models, OCI) checks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Lower-case hex sha256 of the file at ``path``, read in chunks (large models stay out of memory)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
