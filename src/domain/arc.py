"""ARC (adaptive replacement cache) as an eviction policy, weighted by object bytes.

Megiddo and Modha's ARC keeps two resident lists, T1 (seen once recently) and T2 (seen at least twice),
and two ghost lists of keys recently evicted from each, B1 and B2. A store of a key found in a ghost list
is a sign that its list was too short: a B1 hit grows the target size `p` of T1, a B2 hit shrinks it.
Victims come from T1 while T1 holds more than `p`, else from T2. A scan (many keys used once) therefore
only cycles through T1 and never flushes a working set that has been used twice (T2), which is what an
LRU order does.

Departures from the paper, all because objects here have sizes and the caller evicts in batches:

- sizes are bytes, not slots: `p`, the list lengths and the ghost bounds are byte totals, and a ghost
  hit moves `p` by the object's size times the paper's ratio (|B2|/|B1| or |B1|/|B2|, at least 1);
- `victims` only proposes (the L2 wrapper deletes, then calls `remove`); it replays REPLACE on counters,
  so one call can propose a whole eviction batch;
- every `remove` turns the key into a ghost (an explicit delete looks like an eviction to ARC; that only
  nudges `p` if the key comes back);
- ghosts are bounded as in the paper: T1 + B1 <= capacity and T1 + T2 + B1 + B2 <= 2 x capacity.

Not thread-safe; the owner serialises calls (the L2 eviction wrapper runs on the storage event loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lmcache.domain.keys import ObjectKey

__all__ = ("ArcPolicy",)


class _Lru:
    """An insertion-ordered dict of key -> size with its byte total (oldest first)."""

    __slots__ = ("bytes", "items")

    def __init__(self) -> None:
        self.items: dict[ObjectKey, int] = {}
        self.bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self.items

    def __len__(self) -> int:
        return len(self.items)

    def push(self, key: ObjectKey, size: int) -> None:
        self.bytes += size - self.items.pop(key, 0)
        self.items[key] = size

    def pop(self, key: ObjectKey) -> int | None:
        size = self.items.pop(key, None)
        if size is not None:
            self.bytes -= size
        return size

    def pop_oldest(self) -> None:
        key = next(iter(self.items))
        self.bytes -= self.items.pop(key)


class ArcPolicy:
    """Byte-weighted ARC; see the module docstring.

    Args:
        capacity_bytes: The cache size `c` the ghost lists and `p` are bounded by (> 0).
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise ValueError("ARC needs a capacity > 0 bytes")
        self.capacity = capacity_bytes
        self.p = 0.0  # target bytes of T1
        self._t1, self._t2, self._b1, self._b2 = _Lru(), _Lru(), _Lru(), _Lru()

    def __len__(self) -> int:
        return len(self._t1) + len(self._t2)

    @property
    def recent_bytes(self) -> int:
        """Bytes in T1 (seen once)."""
        return self._t1.bytes

    @property
    def frequent_bytes(self) -> int:
        """Bytes in T2 (seen at least twice)."""
        return self._t2.bytes

    def admit(self, key: ObjectKey, size: int) -> None:
        """A new object was stored (a ghost hit adapts `p` and enters T2; otherwise T1)."""
        if key in self._t1 or key in self._t2:
            self._t1.pop(key)
            self._t2.push(key, size)
            return
        if key in self._b1:
            ratio = max(1.0, self._b2.bytes / self._b1.bytes) if self._b1.bytes else 1.0
            self.p = min(float(self.capacity), self.p + size * ratio)
            self._b1.pop(key)
            self._t2.push(key, size)
        elif key in self._b2:
            ratio = max(1.0, self._b1.bytes / self._b2.bytes) if self._b2.bytes else 1.0
            self.p = max(0.0, self.p - size * ratio)
            self._b2.pop(key)
            self._t2.push(key, size)
        else:
            self._t1.push(key, size)
        self._trim_ghosts()

    def touch(self, key: ObjectKey) -> None:
        """The object was used again: it moves to the most recent end of T2."""
        size = self._t1.pop(key)
        if size is None:
            size = self._t2.pop(key)
        if size is not None:
            self._t2.push(key, size)

    def remove(self, key: ObjectKey) -> None:
        """The object left the cache: it becomes a ghost of the list it was in."""
        size = self._t1.pop(key)
        if size is not None:
            self._b1.push(key, size)
        else:
            size = self._t2.pop(key)
            if size is None:
                return
            self._b2.push(key, size)
        self._trim_ghosts()

    def _trim_ghosts(self) -> None:
        while self._b1 and self._t1.bytes + self._b1.bytes > self.capacity:
            self._b1.pop_oldest()
        while (self._b1 or self._b2) and (
            self._t1.bytes + self._t2.bytes + self._b1.bytes + self._b2.bytes > 2 * self.capacity
        ):
            (self._b2 if self._b2 else self._b1).pop_oldest()

    def victims(self, target_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Keys to evict until their sizes reach `target_bytes`: ARC's REPLACE, replayed on byte counters."""
        out: list[ObjectKey] = []
        t1 = _evictable(self._t1, evictable)
        t2 = _evictable(self._t2, evictable)
        t1_bytes, taken = self._t1.bytes, 0
        head1, head2 = next(t1, None), next(t2, None)
        while taken < target_bytes and (head1 is not None or head2 is not None):
            from_t1 = head1 is not None and (t1_bytes > self.p or head2 is None)
            if from_t1 and head1 is not None:
                key, size = head1
                t1_bytes -= size
                head1 = next(t1, None)
            elif head2 is not None:
                key, size = head2
                head2 = next(t2, None)
            else:  # pragma: no cover - the loop condition rules this out
                break
            out.append(key)
            taken += size
        return out

    def quota_victims(self, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """ARC has no quotas."""
        return []


def _evictable(lru: _Lru, evictable: Callable[[ObjectKey], bool]) -> Iterator[tuple[ObjectKey, int]]:
    return ((key, size) for key, size in lru.items.items() if evictable(key))
