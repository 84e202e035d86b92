"""Per-cache_salt byte quotas: the table IsolatedLRU reads and the /quota endpoints edit.

Salts are stored as they appear in keys; `_default` (the HTTP spelling) is accepted for the empty salt.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from lmcache.domain.keys import salt_from_alias, validate_cache_salt


class QuotaStatus(NamedTuple):
    """One salt's quota and its current L1 usage, in bytes; `limit_bytes` None = no quota."""

    limit_bytes: int | None
    usage_bytes: int


class QuotaTable:
    """Thread-safe map cache_salt -> byte limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, int] = {}

    def set(self, salt: str, limit_bytes: int) -> None:
        """Set (or replace) the limit of `salt` (`_default` = the empty salt).

        Raises:
            ValueError: When the limit is negative or the salt is invalid.
        """
        if limit_bytes < 0:
            raise ValueError(f"quota limit must be >= 0 bytes, got {limit_bytes}")
        key = validate_cache_salt(salt_from_alias(salt))
        with self._lock:
            self._limits[key] = int(limit_bytes)

    def get(self, salt: str) -> int | None:
        """The limit of `salt` in bytes, or None without a quota."""
        with self._lock:
            return self._limits.get(salt_from_alias(salt))

    def delete(self, salt: str) -> bool:
        """Remove the quota of `salt`; True when there was one."""
        with self._lock:
            return self._limits.pop(salt_from_alias(salt), None) is not None

    def list(self) -> dict[str, int]:
        """A snapshot of every quota, keyed by the salt as it appears in keys ("" for the default)."""
        with self._lock:
            return dict(self._limits)

    def status(self, usage_by_salt: dict[str, int]) -> dict[str, QuotaStatus]:
        """Every salt that has a quota or usage, with both numbers."""
        limits = self.list()
        salts = set(limits) | set(usage_by_salt)
        return {s: QuotaStatus(limits.get(s), usage_by_salt.get(s, 0)) for s in sorted(salts)}
