"""Timing helpers of the benchmarks: medians and percentiles, the memcpy baseline, round trips."""

from __future__ import annotations

import gc
import statistics
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Callable


GB = 1e9


def median(xs: list[float]) -> float:
    """The median (0 for no samples)."""
    return statistics.median(xs) if xs else 0.0


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the samples."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Memcpy:
    """The baseline: a single-thread `dst.copy_(src)` between pre-touched buffers of `nbytes`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.src = torch.ones(nbytes, dtype=torch.uint8)
        self.dst = torch.zeros(nbytes, dtype=torch.uint8)
        self.seconds()

    def seconds(self) -> float:
        """One timed copy."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            self.dst.copy_(self.src)
            return time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)


def rtt_us(fn: Callable[[], object], n: int) -> list[float]:
    """Microseconds of `n` calls of `fn`, with the GC off."""
    out = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e6)
    finally:
        gc.enable()
    return out
