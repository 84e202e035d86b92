"""Reuse (LRU stack) distance of an access stream: distinct objects touched between two uses of one.

An LRU cache holding C objects hits exactly the reuses whose distance is below C, so the distribution
of distances is the hit-rate curve of every cache size at once (for uniform objects). Computed online in
O(log n) per access with a Fenwick tree over access positions that marks, for each object, its latest
access; the window is bounded by `limit` accesses (the caller says how many were left out).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ("ReuseDistances",)


@dataclass
class ReuseDistances:
    """Accumulates an access stream (at most `limit` accesses) and summarises its reuse distances."""

    limit: int = 2_000_000
    accesses: int = 0
    cold: int = 0
    ignored: int = 0
    distances: array[int] = field(default_factory=lambda: array("q"))
    _tree: array[int] = field(default_factory=lambda: array("q"))
    _last: dict[Hashable, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("the reuse-distance window must hold at least one access")
        self._tree = array("q", bytes(8 * (self.limit + 1)))

    def access(self, key: Hashable) -> None:
        """Record one access of `key` (beyond `limit` accesses, only counted as ignored)."""
        if self.accesses >= self.limit:
            self.ignored += 1
            return
        self.accesses += 1
        i, n, tree = self.accesses, self.limit, self._tree
        previous = self._last.get(key)
        if previous is None:
            self.cold += 1
        else:
            distance, j = 0, i - 1
            while j > previous:  # marks in (previous, i): prefix(i - 1) - prefix(previous)
                distance += tree[j]
                j -= j & -j
            while previous > j:
                distance -= tree[previous]
                previous -= previous & -previous
            self.distances.append(distance)
            j = self._last[key]
            while j <= n:
                tree[j] -= 1
                j += j & -j
        j = i
        while j <= n:
            tree[j] += 1
            j += j & -j
        self._last[key] = i

    @property
    def distinct(self) -> int:
        """Distinct objects seen in the window."""
        return len(self._last)

    def percentiles(self, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, int]:
        """Nearest-rank percentiles of the reuse distances (`p50`, ...) and their `max` (empty: none)."""
        if not self.distances:
            return {}
        ordered = sorted(self.distances)
        last = len(ordered) - 1
        out = {f"p{round(q * 100):d}": ordered[min(last, int(q * len(ordered)))] for q in qs}
        out["max"] = ordered[last]
        return out
