"""Keeping secrets out of sight: link values and provider config are masked here before the
washboard or the CLI shows them.

A value is masked when its key names a secret (``secret``, ``password``, ``token``, ``key``,
case-insensitive, anywhere in the key: ``api_key``, ``NATS_PASSWORD``). Credentials written into
URLs (``nats://user:pass@host``) are masked whatever their key. The washboard masks before
anything reaches the page or its JSON endpoints, so a secret never leaves its process; ``mlcloud
ctl get links`` and ``ctl get inventory`` mask their tables and ``--json`` alike.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "••••••"

_SENSITIVE = re.compile(r"secret|passw(or)?d|token|key", re.IGNORECASE)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.IGNORECASE
)


def is_sensitive(key: str) -> bool:
    return bool(_SENSITIVE.search(key))


def mask_value(key: str, value: Any) -> Any:
    if is_sensitive(key):
        return MASK if value not in (None, "") else value
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
    if isinstance(value, dict):
        return mask_values(value)
    if isinstance(value, list):
        return [mask_value("", v) for v in value]
    return value


def mask_values(values: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``values`` (link values, provider config) that is safe to show."""
    return {str(k): mask_value(str(k), v) for k, v in (values or {}).items()}


def mask_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """Event payloads carry link ``values`` and maybe ``config``; other fields are ids and states.

    Only those two are masked by key: masking every key matching ``key`` would hide
    ``public_key``, which is an identity, not a secret.
    """
    masked = dict(data)
    for field in ("values", "config"):
        if isinstance(masked.get(field), dict):
            masked[field] = mask_values(masked[field])
    return masked
