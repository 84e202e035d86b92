"""The coordinator's L2 key directory: which objects the shared L2 holds, their sizes, per-salt LRU order.

Fed by server events (`store` adds bytes and makes the key the most recent of its salt, `lookup` touches,
`delete` subtracts the size recorded at store time) and by the start-up resync. Each salt keeps its own
LRU (an insertion-ordered dict: the first key is the coldest), so the eviction planner takes a salt's
cold end in O(n) of what it takes. Usage is also attributed to the instance that last stored each key
(`GET /instances/usage`).

Threading: not thread-safe; the coordinator owns one directory on its event loop.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from lmcache.domain.keys import ObjectKey

__all__ = ("DirectoryEntry", "KeyDirectory", "UsageCount")


@dataclass(slots=True)
class DirectoryEntry:
    """What the directory knows of one stored object."""

    nbytes: int
    instance_id: str


@dataclass(slots=True)
class UsageCount:
    """Bytes and object count of a salt or an instance."""

    nbytes: int = 0
    count: int = 0


class KeyDirectory:
    """L2 objects by salt, in LRU order, with per-salt and per-instance usage."""

    def __init__(self) -> None:
        self._by_salt: dict[str, dict[ObjectKey, DirectoryEntry]] = {}
        self._salt_usage: dict[str, int] = defaultdict(int)
        self._instance_usage: dict[str, UsageCount] = defaultdict(UsageCount)
        self._count = 0

    def store(self, key: ObjectKey, nbytes: int, instance_id: str = "") -> None:
        """Record a stored object (or its new size) and make it the most recent of its salt.

        Raises:
            ValueError: When `nbytes` is negative.
        """
        if nbytes < 0:
            raise ValueError(f"object size must be >= 0 bytes, got {nbytes}")
        lru = self._by_salt.setdefault(key.cache_salt, {})
        old = lru.pop(key, None)
        if old is not None:
            self._account(key.cache_salt, old, -1)
        else:
            self._count += 1
        entry = DirectoryEntry(nbytes, instance_id)
        lru[key] = entry
        self._account(key.cache_salt, entry, +1)

    def touch(self, key: ObjectKey) -> bool:
        """Make a known key the most recent of its salt; False when the key is unknown."""
        lru = self._by_salt.get(key.cache_salt)
        if lru is None or key not in lru:
            return False
        lru[key] = lru.pop(key)
        return True

    def delete(self, key: ObjectKey) -> int | None:
        """Forget a key; returns the size recorded at store time, None when it was unknown."""
        lru = self._by_salt.get(key.cache_salt)
        if lru is None:
            return None
        entry = lru.pop(key, None)
        if entry is None:
            return None
        self._count -= 1
        self._account(key.cache_salt, entry, -1)
        if not lru:
            del self._by_salt[key.cache_salt]
        return entry.nbytes

    def forget(self, keys: Iterable[ObjectKey]) -> int:
        """Delete several keys; returns the bytes freed."""
        return sum(self.delete(k) or 0 for k in keys)

    def _account(self, salt: str, entry: DirectoryEntry, sign: int) -> None:
        self._salt_usage[salt] += sign * entry.nbytes
        if self._salt_usage[salt] == 0 and sign < 0:
            del self._salt_usage[salt]
        inst = self._instance_usage[entry.instance_id]
        inst.nbytes += sign * entry.nbytes
        inst.count += sign
        if inst.count == 0:
            del self._instance_usage[entry.instance_id]

    def get(self, key: ObjectKey) -> DirectoryEntry | None:
        """The entry of `key`, or None."""
        lru = self._by_salt.get(key.cache_salt)
        return None if lru is None else lru.get(key)

    def __contains__(self, key: object) -> bool:
        salt = getattr(key, "cache_salt", None)
        lru = self._by_salt.get(salt) if isinstance(salt, str) else None
        return lru is not None and key in lru

    def __len__(self) -> int:
        return self._count

    @property
    def total_bytes(self) -> int:
        """Bytes of every tracked object."""
        return sum(self._salt_usage.values())

    def usage(self, salt: str) -> int:
        """Bytes tracked under `salt` (the key's spelling: "" for the default salt)."""
        return self._salt_usage.get(salt, 0)

    def count(self, salt: str) -> int:
        """Objects tracked under `salt`."""
        return len(self._by_salt.get(salt, ()))

    def usage_by_salt(self) -> dict[str, int]:
        """Bytes per salt, for every salt with at least one object."""
        return {s: self.usage(s) for s in self._by_salt}

    def usage_by_instance(self) -> dict[str, UsageCount]:
        """Bytes and count per storing instance ("" for objects learnt by resync or a checkpoint)."""
        return {i: UsageCount(u.nbytes, u.count) for i, u in self._instance_usage.items()}

    def coldest(self, salt: str, n: int) -> list[ObjectKey]:
        """Up to `n` least recently used keys of `salt`, coldest first."""
        return list(islice(self._by_salt.get(salt, {}), max(n, 0)))

    def items(self) -> Iterator[tuple[ObjectKey, DirectoryEntry]]:
        """Every (key, entry), salt by salt, each salt coldest first (the checkpoint order)."""
        for lru in self._by_salt.values():
            yield from lru.items()

    def page(self, offset: int, limit: int) -> list[tuple[ObjectKey, DirectoryEntry]]:
        """A slice of `items()` for `GET /directory/keys`."""
        return list(islice(self.items(), max(offset, 0), max(offset, 0) + max(limit, 0)))

    def keys(self) -> set[ObjectKey]:
        """A snapshot of every tracked key."""
        return {k for lru in self._by_salt.values() for k in lru}
