"""A min-heap of lock deadlines, so expiring TTLs costs O(log n) per batch of locks, never a scan of L1.

One heap item covers every key locked by one call (a request's chunks share a deadline), so a 64-chunk
reserve costs one push. Refreshing a lock pushes a new item and leaves the old one stale; the owner tells
`pop_due` callers which (key, deadline) pairs are still current. Stale items are compacted away once the
heap outgrows twice its live size.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

K = TypeVar("K")

_COMPACT_FLOOR = 4096


class DeadlineHeap(Generic[K]):
    """Deadlines keyed by K; not thread-safe (the L1 manager calls it under its lock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, tuple[K, ...]]] = []
        self._seq = itertools.count()
        self._compact_at = _COMPACT_FLOOR

    def __len__(self) -> int:
        return len(self._heap)

    def push(
        self, deadline: float, keys: tuple[K, ...], live: Callable[[tuple[K, ...], float], tuple[K, ...]]
    ) -> None:
        """Record that `keys` expire at `deadline`.

        Args:
            deadline: When the locks expire.
            keys: The locked keys (one item for all of them).
            live: The keys of an item whose lock still expires at its deadline; used to drop stale items
                and keys when the heap grows past twice its live size. One call per item, not per key:
                a compaction mostly meets committed writes, all of whose keys are stale.
        """
        if not keys:
            return
        heapq.heappush(self._heap, (deadline, next(self._seq), keys))
        if len(self._heap) > self._compact_at:
            self._compact(live)

    def _compact(self, live: Callable[[tuple[K, ...], float], tuple[K, ...]]) -> None:
        seen: set[K] = set()
        kept = []
        for deadline, seq, keys in self._heap:
            current = live(keys, deadline)
            if current and not seen.isdisjoint(current):
                current = tuple(k for k in current if k not in seen)
            if current:
                seen.update(current)
                kept.append((deadline, seq, current))
        heapq.heapify(kept)
        self._heap = kept
        self._compact_at = max(_COMPACT_FLOOR, 2 * len(kept))

    def items(self) -> Iterator[tuple[K, float]]:
        """Every (key, deadline) still in the heap, stale ones included (the caller checks); no order."""
        for deadline, _, keys in self._heap:
            for key in keys:
                yield key, deadline

    def pop_due(self, now: float) -> Iterator[tuple[K, float]]:
        """Pop every item whose deadline is <= now, stale ones included (the caller checks)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, keys = heapq.heappop(heap)
            for key in keys:
                yield key, deadline

    def clear(self) -> None:
        """Forget every deadline."""
        self._heap.clear()
