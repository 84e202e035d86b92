"""Reusable byte buffers for the serde wrapper's encoded objects, bounce buffers and intermediate stages.

A fresh multi-MiB allocation is mapped by the allocator on demand: its first touch page-faults and the
kernel zeroes every page, about as much CPU per MiB as AES-GCM itself (benchmarks/l2.py --serde measured
90 faults/MiB). Buffers that go back to the pool keep their pages. The pool is bounded (`keep` buffers);
what does not fit is freed.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ("BufferPool", "Scratch")

_GRANULE = 64 << 10


class BufferPool:
    """Thread-safe free list of uint8 arrays.

    Args:
        keep: Buffers kept for reuse at most.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A buffer of at least `nbytes` (a reused one when one fits without wasting more than half)."""
        with self._lock:
            best = None
            for i, buf in enumerate(self._free):
                if nbytes <= buf.size <= 2 * nbytes + _GRANULE and (
                    best is None or buf.size < self._free[best].size
                ):
                    best = i
            if best is not None:
                return self._free.pop(best)
        return np.empty(-(-max(nbytes, 1) // _GRANULE) * _GRANULE, np.uint8)

    def give(self, buf: np.ndarray) -> None:
        """Return a buffer taken from this pool (dropped when the pool is full)."""
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)


class Scratch:
    """Buffers taken for one object's work, given back together (`release`) when it is done."""

    def __init__(self, pool: BufferPool) -> None:
        self.pool = pool
        self._taken: list[np.ndarray] = []

    def __call__(self, nbytes: int) -> memoryview:
        """A writable view of exactly `nbytes` backed by a pooled buffer."""
        buf = self.pool.take(nbytes)
        self._taken.append(buf)
        return buf[:nbytes].data

    def release(self) -> None:
        """Give every buffer back; views handed out must no longer be used."""
        for buf in self._taken:
            self.pool.give(buf)
        self._taken.clear()
