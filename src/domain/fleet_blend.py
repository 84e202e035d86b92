"""The coordinator's CacheBlend directory: chunk fingerprints published by blend servers, matched by query.

The fingerprint of a chunk `x0..x(cs-1)` (tokens as uint64) is `sum(xi * B^(cs-1-i)) mod 2^64` with
`B = 0x9E3779B97F4A7C15` (cacheblend.md §3.1); queries roll the same hash over every window and probe
positions `0, s, 2s, ...` (`--blend-probe-stride`). Entries are scoped by `"<model>@<salt>"` and keyed by
(scope, fingerprint); a publication of tokens already indexed under that scope is a no-op (first writer
wins). Departure from LMCache (coordinator-api.md §3): every entry keeps its chunk's tokens and a
candidate is verified token by token, so a 64-bit collision is skipped, never matched; several distinct
chunks may share a fingerprint.

Departure from conventions.md §8: the rolling hash is a Python loop over the query's tokens. The domain
may not import numpy, and a blend query is one prompt (thousands of tokens, a few milliseconds).

Threading: not thread-safe; owned by the coordinator's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = (
    "BLEND_BASE",
    "BlendDirectory",
    "BlendMatch",
    "BlendRange",
    "chunk_fingerprint",
    "rolling_fingerprints",
)

BLEND_BASE = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def chunk_fingerprint(tokens: Sequence[int]) -> int:
    """The fingerprint of one chunk (Horner: `h = h*B + x` mod 2^64, tokens as uint64)."""
    h = 0
    for x in tokens:
        h = (h * BLEND_BASE + (x & _MASK)) & _MASK
    return h


def rolling_fingerprints(tokens: Sequence[int], chunk_size: int) -> list[int]:
    """The fingerprint of every window of `chunk_size` tokens (`len - cs + 1` values; [] when shorter)."""
    n = len(tokens)
    if n < chunk_size:
        return []
    top = pow(BLEND_BASE, chunk_size - 1, 1 << 64)
    h = chunk_fingerprint(tokens[:chunk_size])
    out = [h]
    for i in range(chunk_size, n):
        h = (((h - (tokens[i - chunk_size] & _MASK) * top) * BLEND_BASE) + (tokens[i] & _MASK)) & _MASK
        out.append(h)
    return out


@dataclass(frozen=True, slots=True)
class BlendRange:
    """One published range: `tokens` stored at `old_st_base`, one chunk hash (hex) per full chunk."""

    model_scope: str
    tokens: tuple[int, ...]
    object_keys: tuple[str, ...]
    old_st_base: int


@dataclass(frozen=True, slots=True)
class BlendMatch:
    """A stored chunk found in a query: its chunk hash, stored start and start in the query."""

    object_key: str
    old_st: int
    cur_st: int


@dataclass(frozen=True, slots=True)
class _Entry:
    object_key: str
    tokens: tuple[int, ...]
    old_st: int


class BlendDirectory:
    """Fingerprint index of published chunks.

    Args:
        chunk_size: Tokens per chunk (`--blend-chunk-size`, equal to the servers' chunk size).
        probe_stride: Positions between match probes (`--blend-probe-stride`, >= 1).
    """

    def __init__(self, chunk_size: int, probe_stride: int = 1) -> None:
        if chunk_size < 1 or probe_stride < 1:
            raise ValueError("chunk_size and probe_stride must be >= 1")
        self.chunk_size = chunk_size
        self.probe_stride = probe_stride
        self._index: dict[tuple[str, int], list[_Entry]] = {}
        self._by_object: dict[str, set[tuple[str, int]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())

    def insert(self, ranges: Iterable[BlendRange]) -> int:
        """Index every full chunk of each range; returns the entries that were new.

        A range whose `object_keys` count differs from its full-chunk count is skipped whole.
        """
        cs = self.chunk_size
        inserted = 0
        for rng in ranges:
            n_chunks = len(rng.tokens) // cs
            if len(rng.object_keys) != n_chunks:
                continue
            for i, object_key in enumerate(rng.object_keys):
                chunk = rng.tokens[i * cs : (i + 1) * cs]
                slot = (rng.model_scope, chunk_fingerprint(chunk))
                entries = self._index.setdefault(slot, [])
                if any(e.tokens == chunk for e in entries):
                    continue  # first writer wins
                entries.append(_Entry(object_key, chunk, rng.old_st_base + i * cs))
                self._by_object.setdefault(object_key, set()).add(slot)
                inserted += 1
        return inserted

    def delete(self, object_keys: Iterable[str]) -> int:
        """Remove every entry of the given chunk hashes; returns the entries removed."""
        removed = 0
        for object_key in object_keys:
            for slot in self._by_object.pop(object_key, set()):
                entries = self._index.get(slot, [])
                kept = [e for e in entries if e.object_key != object_key]
                removed += len(entries) - len(kept)
                if kept:
                    self._index[slot] = kept
                else:
                    self._index.pop(slot, None)
        return removed

    def match(self, model_scope: str, tokens: Sequence[int]) -> list[BlendMatch]:
        """Stored chunks of `model_scope` found in `tokens`, at most one per chunk hash, ascending cur_st."""
        cs = self.chunk_size
        seen: set[str] = set()
        out: list[BlendMatch] = []
        fingerprints = rolling_fingerprints(tokens, cs)
        for pos in range(0, len(fingerprints), self.probe_stride):
            entries = self._index.get((model_scope, fingerprints[pos]))
            if not entries:
                continue
            window = tuple(tokens[pos : pos + cs])
            for entry in entries:
                if entry.object_key not in seen and entry.tokens == window:
                    seen.add(entry.object_key)
                    out.append(BlendMatch(entry.object_key, entry.old_st, pos))
        return out
