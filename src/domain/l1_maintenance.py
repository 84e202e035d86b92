"""L1 maintenance: TTL reaping, eviction, delete, clear, usage and lock counts.

What the eviction and reaper loops and the admin API call, layered on `L1Index` (whose docstring says
what a forced removal of read-locked objects does); `L1Manager` adds the engine's reads and writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.domain.events import EvictionReason, L1WriteAborted
from lmcache.domain.l1_index import ClearReport, L1Index, LockCounts

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lmcache.domain.arena import ArenaStats
    from lmcache.domain.keys import ObjectKey


class L1Maintenance(L1Index):
    """Reaping, eviction and removal over the index; see `L1Manager` for the constructor arguments."""

    def reap_expired(self) -> list[ObjectKey]:
        """Recover locks whose TTL passed: free expired write reservations, zero expired read locks.

        Returns:
            The keys whose write reservation expired (their bytes were never visible).
        """
        expired_writes: list[ObjectKey] = []
        temporaries: list[tuple[ObjectKey, int]] = []
        with self._lock:
            now = self._tick()
            for key, deadline in self._deadlines.pop_due(now):
                entry = self._entries.get(key)
                if entry is None or entry.deadline != deadline or not entry.locked:
                    continue  # stale heap item: the lock was refreshed, released or the object left
                if not entry.ready:
                    self._free(key, entry)
                    expired_writes.append(key)
                    continue
                entry.readers = 0
                entry.deadline = 0.0
                if entry.temporary:
                    temporaries.append((key, self._free(key, entry)))
            for key in [k for k, r in self._retired.items() if r.deadline <= now]:
                self._release_retired(key)
            if expired_writes:
                self._events.publish(L1WriteAborted(tuple(expired_writes), expired=True))
            self._publish_removed(temporaries, EvictionReason.TEMPORARY)
        return expired_writes

    def evict(self, target_bytes: int, reason: EvictionReason = EvictionReason.WATERMARK) -> tuple[int, int]:
        """Evict unlocked ready objects in policy order until `target_bytes` are freed.

        Returns:
            (objects evicted, bytes freed).
        """
        with self._lock:
            self._tick()
            victims = self.policy.victims(target_bytes, self._evictable)
            return self._remove_all(victims, reason)

    def evict_over_quota(self) -> tuple[int, int]:
        """Evict what the policy finds over a tenant quota (IsolatedLRU); (objects, bytes)."""
        with self._lock:
            self._tick()
            return self._remove_all(self.policy.quota_victims(self._evictable), EvictionReason.QUOTA)

    def delete(self, keys: Iterable[ObjectKey], force: bool = False) -> int:
        """Remove ready, unlocked objects (`force`: read-locked ones too, and expired reservations)."""
        with self._lock:
            self._tick()
            unique = dict.fromkeys(keys)  # a key named twice is removed once
            chosen = [
                k for k in unique if k in self._entries and (self._evictable(k) or self._forcible(k, force))
            ]
            return self._remove_all(chosen, EvictionReason.CLEAR, retire_held=force)[0]

    def mark_temporary(self, keys: Iterable[ObjectKey], reason: EvictionReason) -> int:
        """Drop ready objects now when unlocked, else when their last read lock goes; returns dropped now."""
        with self._lock:
            self._tick()
            now: list[ObjectKey] = []
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or not entry.ready:
                    continue
                if self._evictable(key):
                    now.append(key)
                else:
                    entry.temporary = True
            return self._remove_all(now, reason)[0]

    def clear(self, force: bool = False) -> int:
        """`clear_report(force).removed`."""
        return self.clear_report(force).removed

    def clear_report(self, force: bool = False) -> ClearReport:
        """Remove unlocked ready objects and expired reservations; `force`: read-locked objects too.

        Live write reservations always stay (their writer commits them). Read-locked objects removed by
        `force` are retired (module docstring).
        """
        with self._lock:
            now = self._tick()
            chosen = [
                k
                for k, e in self._entries.items()
                if (e.ready and (force or self._evictable(k))) or (not e.ready and e.deadline <= now)
            ]
            removed = self._remove_all(chosen, EvictionReason.CLEAR, retire_held=force)[0]
            writing = sum(1 for e in self._entries.values() if not e.ready)
            return ClearReport(
                removed, len(self._entries) - writing, writing, len(self._retired), self.retired_bytes
            )

    def usage_by_salt(self) -> dict[str, int]:
        """Bytes held per cache_salt (reservations included)."""
        with self._lock:
            return dict(self._salt_bytes)

    def stats(self) -> ArenaStats:
        """Arena usage and fragmentation."""
        with self._lock:
            return self.arena.stats()

    def lock_counts(self) -> LockCounts:
        """Objects holding live locks now; walks the lock deadlines, not the index (cost ~ locks held)."""
        with self._lock:
            now = self._tick()
            readers: set[ObjectKey] = set()
            writers: set[ObjectKey] = set()
            for key, deadline in self._deadlines.items():
                entry = self._entries.get(key)
                if entry is None or entry.deadline != deadline or deadline <= now or not entry.locked:
                    continue
                (readers if entry.ready else writers).add(key)
            locks = sum(self._entries[k].readers for k in readers)
            for key, retired in self._retired.items():
                if retired.readers and retired.deadline > now:
                    readers.add(key)
                    locks += retired.readers
            return LockCounts(len(readers), locks, len(writers))
