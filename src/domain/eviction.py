"""Eviction policies: which ready L1 objects go first (`LRU`, `IsolatedLRU`, `noop`).

A policy only orders keys; the L1 manager decides what is evictable (never a locked or half-written
object) and removes what the policy proposes. Policies are not thread-safe: the manager calls them
under its lock.

The orders are plain dicts (insertion-ordered; a touch re-inserts at the end): half the memory of an
OrderedDict per object (42 vs 91 bytes, `benchmarks/storage_engine.py`), and the coldest keys are the
first ones iterated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.quotas import QuotaTable

EvictionPolicyName = Literal["LRU", "IsolatedLRU", "noop"]


class EvictionPolicy(Protocol):
    """Orders the ready objects of L1 for eviction."""

    def admit(self, key: ObjectKey, size: int) -> None:
        """A ready object of `size` bytes entered L1 (most recently used)."""
        ...

    def touch(self, key: ObjectKey) -> None:
        """The object was used; unknown keys are ignored."""
        ...

    def remove(self, key: ObjectKey) -> None:
        """The object left L1; unknown keys are ignored."""
        ...

    def victims(self, target_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Keys to evict, coldest first, until their sizes reach `target_bytes` (fewer if not enough)."""
        ...

    def quota_victims(self, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Keys to evict because their tenant is over its quota (only IsolatedLRU has quotas)."""
        ...


def _take_cold(
    lru: dict[ObjectKey, int],
    target: int,
    evictable: Callable[[ObjectKey], bool],
    out: list[ObjectKey],
) -> int:
    taken = 0
    for key, size in lru.items():
        if taken >= target:
            break
        if evictable(key):
            out.append(key)
            taken += size
    return taken


class LruPolicy:
    """One least-recently-used order over every ready object."""

    def __init__(self) -> None:
        self._lru: dict[ObjectKey, int] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def admit(self, key: ObjectKey, size: int) -> None:
        """Insert as most recently used."""
        self._lru.pop(key, None)
        self._lru[key] = size

    def touch(self, key: ObjectKey) -> None:
        """Move to the most recently used end."""
        size = self._lru.pop(key, None)
        if size is not None:
            self._lru[key] = size

    def remove(self, key: ObjectKey) -> None:
        """Forget the key."""
        self._lru.pop(key, None)

    def victims(self, target_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Coldest evictable keys covering `target_bytes`."""
        out: list[ObjectKey] = []
        _take_cold(self._lru, target_bytes, evictable, out)
        return out

    def quota_victims(self, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """LRU has no quotas."""
        return []


class IsolatedLruPolicy:
    """One LRU per cache_salt; a salt's limit comes from the quota table, no quota = limit 0 (allowlist).

    Args:
        quotas: The per-salt byte limits, read at every eviction decision.
    """

    def __init__(self, quotas: QuotaTable) -> None:
        self._quotas = quotas
        self._lrus: dict[str, dict[ObjectKey, int]] = {}
        self._bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(lru) for lru in self._lrus.values())

    def admit(self, key: ObjectKey, size: int) -> None:
        """Insert into the salt's LRU as most recently used."""
        lru = self._lrus.setdefault(key.cache_salt, {})
        old = lru.pop(key, 0)
        lru[key] = size
        self._bytes[key.cache_salt] = self._bytes.get(key.cache_salt, 0) - old + size

    def touch(self, key: ObjectKey) -> None:
        """Move to the most recently used end of its salt's LRU."""
        lru = self._lrus.get(key.cache_salt)
        if lru is not None and key in lru:
            lru[key] = lru.pop(key)

    def remove(self, key: ObjectKey) -> None:
        """Forget the key."""
        lru = self._lrus.get(key.cache_salt)
        if lru is None or key not in lru:
            return
        self._bytes[key.cache_salt] -= lru.pop(key)
        if not lru:
            del self._lrus[key.cache_salt]
            del self._bytes[key.cache_salt]

    def bytes_by_salt(self) -> dict[str, int]:
        """Ready bytes per salt."""
        return dict(self._bytes)

    def _excess(self) -> list[tuple[int, str]]:
        limits = self._quotas.list()
        excess = [(used - limits.get(salt, 0), salt) for salt, used in self._bytes.items()]
        return sorted(excess, reverse=True)

    def quota_victims(self, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """For every salt over its limit, its coldest keys covering the excess."""
        out: list[ObjectKey] = []
        for excess, salt in self._excess():
            if excess <= 0:
                break
            _take_cold(self._lrus[salt], excess, evictable, out)
        return out

    def victims(self, target_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Coldest keys of the salts furthest over their limits first, until `target_bytes` is covered."""
        out: list[ObjectKey] = []
        remaining = target_bytes
        for _, salt in self._excess():
            if remaining <= 0:
                break
            remaining -= _take_cold(self._lrus[salt], remaining, evictable, out)
        return out


class NoopPolicy:
    """Never evicts: L1 is a pure write buffer emptied by the `skip_l1` store policy."""

    def admit(self, key: ObjectKey, size: int) -> None:
        """Ignored."""

    def touch(self, key: ObjectKey) -> None:
        """Ignored."""

    def remove(self, key: ObjectKey) -> None:
        """Ignored."""

    def victims(self, target_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Nothing."""
        return []

    def quota_victims(self, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Nothing."""
        return []
