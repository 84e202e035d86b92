"""The CacheBlend rolling hash and probe filter in numpy (the `FingerprintProbe` port, cacheblend.md §3.1).

Fingerprint of `x0..x(k-1)` = `sum(xi * B^(k-1-i)) mod 2^64`, B = 0x9E3779B97F4A7C15. Every window at
once: B is odd, hence invertible mod 2^64, so with `C[k] = sum_{i<k} x_i * B^-i` (a wrapping cumsum) the
window at p is `B^(p+cs-1) * (C[p+cs] - C[p])`: five vector passes over the prompt, no per-token Python.
numpy's uint64 array arithmetic wraps modulo 2^64, which is exactly the hash's ring.

The filter is a saturating uint8 count per slot, slot = the fingerprint's low bits, sized at 32 slots
per entry (about 3 % of windows pass falsely); a 32k-token prompt leaves the caller a few hundred dict
lookups. Counts stuck at 255 are never decremented (a permanent "maybe", never a false "no").
"""

from __future__ import annotations

import array
from typing import TYPE_CHECKING

import numpy as np

from lmcache.domain.hashing import TokenError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ("BLEND_BASE", "NumpyFingerprintProbe")

BLEND_BASE = 0x9E3779B97F4A7C15
_INVERSE = pow(BLEND_BASE, -1, 1 << 64)
_U32 = "I" if array.array("I").itemsize == 4 else "L"
_SLOTS_PER_ENTRY = 32
_MIN_BITS, _MAX_BITS = 16, 28
_SATURATED = 255
_KEPT_POWERS = 1 << 20  # 16 MiB of power tables at most stay allocated between queries


def _tokens(tokens: Sequence[int]) -> np.ndarray:
    """Token ids as uint64 through a uint32 buffer (one C call; three times faster than np.array)."""
    if isinstance(tokens, np.ndarray):
        return tokens.astype(np.uint64, copy=False)
    try:
        packed = array.array(_U32, tokens)
    except (OverflowError, TypeError) as exc:
        raise TokenError(f"token ids must be unsigned 32-bit integers ({exc})") from exc
    return np.frombuffer(packed, dtype=np.uint32).astype(np.uint64)


def _powers(base: int, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


class NumpyFingerprintProbe:
    """Vectorised fingerprints and a counting pre-filter; not thread-safe (the index serialises calls)."""

    def __init__(self, expected: int = 0) -> None:
        self._pow = _powers(BLEND_BASE, 1)
        self._inv = _powers(_INVERSE, 1)
        self._bits = _MIN_BITS
        self._counts = np.zeros(1 << self._bits, dtype=np.uint8)
        self._resize(expected)

    # ------------------------------------------------------------------ math
    def _tables(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Powers of B and B^-1 for `n` positions: kept up to `_KEPT_POWERS`, made afresh beyond."""
        if len(self._pow) < n:
            if n > _KEPT_POWERS:
                return _powers(BLEND_BASE, n), _powers(_INVERSE, n)
            size = min(max(n, 2 * len(self._pow)), _KEPT_POWERS)
            self._pow = _powers(BLEND_BASE, size)
            self._inv = _powers(_INVERSE, size)
        return self._pow, self._inv

    def rolling(self, tokens: Sequence[int], chunk_size: int) -> np.ndarray:
        """The fingerprint of every window of `chunk_size` tokens (uint64; empty when shorter)."""
        x = _tokens(tokens)
        n = len(x)
        if n < chunk_size or chunk_size < 1:
            return np.empty(0, dtype=np.uint64)
        powers, inverses = self._tables(n + 1)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(x * inverses[:n], dtype=np.uint64, out=prefix[1:])
        windows = n - chunk_size + 1
        diff: np.ndarray = prefix[chunk_size:] - prefix[:windows]
        np.multiply(diff, powers[chunk_size - 1 : chunk_size - 1 + windows], out=diff)
        return diff

    def chunk_fingerprints(self, tokens: Sequence[int], chunk_size: int) -> list[int]:
        """The fingerprint of each full, aligned chunk."""
        x = _tokens(tokens)
        chunks = len(x) // chunk_size
        if chunks == 0:
            return []
        weights = self._tables(chunk_size)[0][:chunk_size][::-1]
        grid = x[: chunks * chunk_size].reshape(chunks, chunk_size)
        sums: list[int] = (grid * weights).sum(axis=1, dtype=np.uint64).tolist()
        return sums

    # ---------------------------------------------------------------- filter
    @property
    def capacity(self) -> int:
        """Entries this filter is sized for."""
        if self._bits >= _MAX_BITS:
            return 1 << 62  # cannot grow: keep serving with a higher false-positive rate
        return (1 << self._bits) // _SLOTS_PER_ENTRY

    def _resize(self, expected: int) -> None:
        bits = _MIN_BITS
        while bits < _MAX_BITS and (1 << bits) < expected * _SLOTS_PER_ENTRY:
            bits += 1
        self._bits = bits
        self._counts = np.zeros(1 << bits, dtype=np.uint8)

    def _slots(self, fingerprints: Iterable[int]) -> np.ndarray:
        fps = np.fromiter(fingerprints, dtype=np.uint64)
        return (fps & np.uint64((1 << self._bits) - 1)).astype(np.intp)

    def add(self, fingerprints: Iterable[int]) -> None:
        """Count each fingerprint once more (saturating)."""
        for slot in self._slots(fingerprints).tolist():
            if self._counts[slot] < _SATURATED:
                self._counts[slot] += 1

    def discard(self, fingerprints: Iterable[int]) -> None:
        """Count each fingerprint once less (saturated slots stay)."""
        for slot in self._slots(fingerprints).tolist():
            count = self._counts[slot]
            if 0 < count < _SATURATED:
                self._counts[slot] = count - 1

    def rebuild(self, fingerprints: Iterable[int], expected: int) -> None:
        """Resize for `expected` entries and count exactly `fingerprints`."""
        self._resize(expected)
        slots = self._slots(fingerprints)
        counts = np.bincount(slots, minlength=len(self._counts))
        np.minimum(counts, _SATURATED, out=counts)
        self._counts = counts.astype(np.uint8)

    def candidates(self, tokens: Sequence[int], chunk_size: int) -> tuple[list[int], list[int]]:
        """Window positions the filter passes, ascending, with their fingerprints."""
        fps = self.rolling(tokens, chunk_size)
        if not len(fps):
            return [], []
        mask = np.uint64((1 << self._bits) - 1)
        hits = np.flatnonzero(self._counts[(fps & mask).astype(np.intp)])
        positions: list[int] = hits.tolist()
        values: list[int] = fps[hits].tolist()
        return positions, values
