"""The configuration as `GET /config` shows it: secrets (passwords, keys, tokens) replaced by a marker."""

from __future__ import annotations

import re
from typing import Any

__all__ = ("REDACTED", "redact_secrets")

REDACTED = "***"
_SECRET = re.compile(r"password|secret|token|access_key|credential|api_key", re.IGNORECASE)


def redact_secrets(value: Any) -> Any:
    """A copy of a JSON-like value whose secret-named fields hold `REDACTED` (when set)."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET.search(str(k)) and v not in (None, "") else redact_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value
