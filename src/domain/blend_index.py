"""The local CacheBlend fingerprint index (cacheblend.md §3.2-3.5): what stores register, prompts find.

Entries are keyed by (scope, fingerprint), scope = (model, world size, cache salt) ("Decided", §3.5), so
a foreign tenant's lookup neither matches nor strikes them. Within a scope:

- a chain hash already indexed is skipped (re-storing a prompt keeps its first position);
- the same text behind another prefix has another chain hash and registers again: the latest
  registration of a fingerprint wins (vector V4);
- a chunk struck stale twice in a row is removed; a found chunk's strikes reset.

Matching is stride 1 over every window; one result per stored chunk at its first position, ascending.
As in LMCache, tokens are not compared: a match trusts the full 64-bit fingerprint.

Departures from LMCache 0.5.6: a dict per scope instead of a 2^20-slot table keyed by the low 20 bits
(so unrelated chunks never evict each other), and no lifetime cap of 2^20 registrations: the oldest
registrations are dropped past `max_entries` instead, which bounds memory.

The per-token work (rolling hash, filter probe) runs in the `FingerprintProbe` port's vector code; the
Python loop here only visits the few windows the filter lets through. Thread-safe (one lock).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.blend_types import BlendMatch

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lmcache.domain.blend_types import BlendScope
    from lmcache.ports.blend import FingerprintProbe

__all__ = ("STRIKES_TO_REMOVE", "FingerprintIndex")

STRIKES_TO_REMOVE = 2


@dataclass(slots=True)
class _Entry:
    scope: BlendScope
    chunk_hash: bytes
    fingerprint: int
    old_st: int
    strikes: int = 0
    alive: bool = True


class FingerprintIndex:
    """Scoped fingerprint -> stored chunk.

    Args:
        chunk_size: Tokens per chunk (`--chunk-size`).
        probe: The vectorised fingerprint math and pre-filter.
        max_entries: Registrations kept at most; the oldest go first beyond it.
    """

    def __init__(self, chunk_size: int, probe: FingerprintProbe, max_entries: int = 1 << 20) -> None:
        if chunk_size < 1 or max_entries < 1:
            raise ValueError("chunk_size and max_entries must be >= 1")
        self.chunk_size = chunk_size
        self.max_entries = max_entries
        self._probe = probe
        self._lock = threading.Lock()
        self._scopes: dict[BlendScope, dict[int, _Entry]] = {}
        self._by_hash: dict[tuple[BlendScope, bytes], _Entry] = {}
        self._fifo: collections.deque[_Entry] = collections.deque()
        self.registered_total = 0
        self.removed_stale_total = 0
        self.dropped_oldest_total = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    # ------------------------------------------------------------ registration
    def register(
        self, scope: BlendScope, tokens: Sequence[int], first_chunk: int, hashes: Sequence[bytes]
    ) -> int:
        """Index consecutive stored chunks: chunk `first_chunk + i` of `tokens` has chain hash `hashes[i]`.

        Chunk 0 of a sequence is never indexed (the prefix path serves it). Returns the new entries.
        """
        if first_chunk == 0:
            first_chunk, hashes = 1, hashes[1:]
        if not hashes:
            return 0
        cs = self.chunk_size
        window = tokens[first_chunk * cs : (first_chunk + len(hashes)) * cs]
        if len(window) != len(hashes) * cs:
            raise ValueError("the registered chunks lie outside the tokens")
        with self._lock:
            fingerprints = self._probe.chunk_fingerprints(window, cs)
            entries = self._scopes.setdefault(scope, {})
            added = 0
            for i, (chunk_hash, fp) in enumerate(zip(hashes, fingerprints, strict=True)):
                if (scope, chunk_hash) in self._by_hash:
                    continue  # this very chunk is indexed already: keep its first position
                previous = entries.get(fp)
                if previous is not None:
                    self._unlink(previous)  # the latest registration of the same text wins
                else:
                    self._probe.add((fp,))
                entry = _Entry(scope, chunk_hash, fp, (first_chunk + i) * cs)
                entries[fp] = entry
                self._by_hash[(scope, chunk_hash)] = entry
                self._fifo.append(entry)
                added += 1
            self.registered_total += added
            self._bound()
            return added

    def _unlink(self, entry: _Entry) -> None:
        """Forget an entry whose fingerprint slot is being reused (the filter keeps the fingerprint)."""
        entry.alive = False
        self._by_hash.pop((entry.scope, entry.chunk_hash), None)

    def _remove(self, entry: _Entry) -> None:
        entry.alive = False
        self._by_hash.pop((entry.scope, entry.chunk_hash), None)
        entries = self._scopes.get(entry.scope)
        if entries is not None and entries.get(entry.fingerprint) is entry:
            del entries[entry.fingerprint]
            if not entries:
                del self._scopes[entry.scope]
        self._probe.discard((entry.fingerprint,))

    def _bound(self) -> None:
        while len(self._by_hash) > self.max_entries:
            oldest = self._fifo.popleft()
            if oldest.alive:
                self._remove(oldest)
                self.dropped_oldest_total += 1
        if len(self._fifo) > 2 * len(self._by_hash) + 1024:
            self._fifo = collections.deque(e for e in self._fifo if e.alive)
        if len(self._by_hash) > self._probe.capacity:
            self._probe.rebuild(
                (fp for entries in self._scopes.values() for fp in entries), 2 * len(self._by_hash)
            )

    # ---------------------------------------------------------------- matching
    def match(self, scope: BlendScope, tokens: Sequence[int]) -> list[BlendMatch]:
        """The scope's stored chunks found in `tokens`: one per chunk, first position, ascending cur_st."""
        cs = self.chunk_size
        if len(tokens) < cs:
            return []
        with self._lock:
            entries = self._scopes.get(scope)
            if not entries:
                return []
            positions, fingerprints = self._probe.candidates(tokens, cs)
            seen: set[int] = set()
            out: list[BlendMatch] = []
            for pos, fp in zip(positions, fingerprints, strict=True):
                entry = entries.get(fp)
                if entry is None or fp in seen:
                    continue
                seen.add(fp)
                out.append(BlendMatch(entry.old_st, entry.old_st + cs, pos, pos + cs, entry.chunk_hash))
            return out

    # ----------------------------------------------------------------- upkeep
    def found(self, scope: BlendScope, hashes: Iterable[bytes]) -> None:
        """These chunks were loaded: their strikes reset."""
        with self._lock:
            for chunk_hash in hashes:
                entry = self._by_hash.get((scope, chunk_hash))
                if entry is not None:
                    entry.strikes = 0

    def strike(self, scope: BlendScope, hashes: Iterable[bytes]) -> int:
        """These chunks were absent everywhere; returns how many reached the strike limit and left."""
        removed = 0
        with self._lock:
            for chunk_hash in hashes:
                entry = self._by_hash.get((scope, chunk_hash))
                if entry is None:
                    continue
                entry.strikes += 1
                if entry.strikes >= STRIKES_TO_REMOVE:
                    self._remove(entry)
                    removed += 1
            self.removed_stale_total += removed
        return removed

    def scopes(self) -> dict[str, int]:
        """Entries per scope, for `/status` (`model@world@salt`)."""
        with self._lock:
            return {
                f"{s.model_name}@{s.world_size}@{s.cache_salt}": len(entries)
                for s, entries in self._scopes.items()
            }
