"""The sparse read locks a CacheBlend lookup holds for its request (cacheblend.md §3.4 step 7, §4.4, §4.6).

A lookup's found (and segmented) chunks stay read-locked until a retrieve reads them. The stash is a
ledger per request_id: for each chunk hash its keys (every rank, group-major then rank), and for each
key how many of the lookup's locks are still held. A retrieve consumes one lock per key it reads; the
first retrieve that gets past the allocation gate releases the chunks the client did not send
(orphans); `end_session`, a repeated lookup, session expiry or the bound on stashes release the rest.

Departure from LMCache 0.5.6, which pops the whole stash on the first retrieve: the ledger stays until
the session ends, so a later rank's retrieve consumes exactly the lock taken for it and `end_session`
frees exactly what nobody read: no lock is released twice and none outlives its session.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager

__all__ = ("BlendStash", "StashEntry")


@dataclass(slots=True)
class StashEntry:
    """One request's ledger.

    Attributes:
        created_at: Clock time of the lookup that made it.
        per_hash: Chunk hash -> its keys (every rank, group-major then rank).
        held: Key -> locks of this lookup still held on it.
        orphans_released: Whether a retrieve already released the chunks it did not send.
    """

    created_at: float
    per_hash: dict[bytes, list[ObjectKey]]
    held: dict[ObjectKey, int] = field(default_factory=dict)
    orphans_released: bool = False


class BlendStash:
    """Thread-safe ledgers keyed by request_id.

    Args:
        l1: The L1 store whose locks are released.
        max_entries: Ledgers kept at most; the oldest is released when a new one would exceed it.
    """

    def __init__(self, l1: L1Manager, max_entries: int = 65536) -> None:
        self._l1 = l1
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, StashEntry] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def locks_held(self) -> int:
        """Read locks held across every ledger (`/status`)."""
        with self._lock:
            return sum(sum(e.held.values()) for e in self._entries.values())

    def put(
        self, request_id: str, per_hash: Mapping[bytes, Sequence[ObjectKey]], readers: int, created_at: float
    ) -> None:
        """Record a lookup's locks (`readers` on each key), releasing the request's previous ledger first."""
        entry = StashEntry(created_at, {h: list(keys) for h, keys in per_hash.items()})
        for keys in entry.per_hash.values():
            for key in keys:
                entry.held[key] = entry.held.get(key, 0) + readers
        released: list[StashEntry] = []
        with self._lock:
            old = self._entries.pop(request_id, None)
            if old is not None:
                released.append(old)
            self._entries[request_id] = entry
            while len(self._entries) > self.max_entries:
                released.append(self._entries.popitem(last=False)[1])
        for stale in released:
            self._release_all(stale)

    def get(self, request_id: str) -> StashEntry | None:
        """The request's ledger (callers change it only through the methods below)."""
        with self._lock:
            return self._entries.get(request_id)

    def release_orphans(self, request_id: str, sent: Iterable[bytes]) -> int:
        """Once per ledger: release every lock on chunks not in `sent`; returns locks released."""
        keep = set(sent)
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None or entry.orphans_released:
                return 0
            entry.orphans_released = True
            gone: dict[ObjectKey, int] = {}
            for chunk_hash in [h for h in entry.per_hash if h not in keep]:
                for key in entry.per_hash.pop(chunk_hash):
                    count = entry.held.pop(key, 0)
                    if count:
                        gone[key] = gone.get(key, 0) + count
        return self._unlock(gone)

    def consume(self, request_id: str, keys: Iterable[ObjectKey]) -> list[bool]:
        """Take over one held lock per key (the caller releases it after reading); False where none is."""
        out: list[bool] = []
        with self._lock:
            entry = self._entries.get(request_id)
            for key in keys:
                count = entry.held.get(key, 0) if entry is not None else 0
                if count and entry is not None:
                    if count == 1:
                        del entry.held[key]
                    else:
                        entry.held[key] = count - 1
                out.append(bool(count))
        return out

    def release(self, request_id: str) -> int:
        """Drop the request's ledger, releasing every lock still held; returns locks released."""
        with self._lock:
            entry = self._entries.pop(request_id, None)
        return 0 if entry is None else self._release_all(entry)

    def expire(self, cutoff: float) -> list[str]:
        """Release ledgers created at or before `cutoff`; returns their request ids."""
        with self._lock:
            old = [rid for rid, e in self._entries.items() if e.created_at <= cutoff]
            entries = [self._entries.pop(rid) for rid in old]
        for entry in entries:
            self._release_all(entry)
        return old

    def _release_all(self, entry: StashEntry) -> int:
        held, entry.held = entry.held, {}
        return self._unlock(held)

    def _unlock(self, counts: Mapping[ObjectKey, int]) -> int:
        by_count: dict[int, list[ObjectKey]] = {}
        for key, count in counts.items():
            by_count.setdefault(count, []).append(key)
        for count, keys in by_count.items():
            self._l1.unlock_read(keys, count)
        return sum(counts.values())
