"""State of the L1 object store and its maintenance: TTL reaping, eviction, delete, clear, usage.

Split from l1_manager.py (which adds the read and write operations) to keep modules small; the two are
one class. Thread-safety: public methods take `_lock`; `_`-methods expect it held.

A forced delete or clear removes read-locked objects from the index at once, but their memory is only
freed when the last reader lets go or the locks expire: a reader may still be copying out of it, and
handing those bytes to a new object would corrupt what it reads. Until then the object is "retired":
invisible and not evictable. Its key can be stored again at once: the new object supersedes it (a store
after a clear must land). Read locks are counted per key, not per object, so a retired object and its
successor share them: an unlock goes to the retired object first, the retired memory goes once no lock
on the key is left (or the retired locks expire), and until then the successor is not evictable either
(an old reader may be copying out of it). Live write reservations are left alone by a forced clear or
delete: their writer commits them as a store that came after the clear.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

from lmcache.domain.deadlines import DeadlineHeap
from lmcache.domain.events import EvictionReason, L1Removed, L1WriteAborted
from lmcache.domain.null_events import NullEventSink

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lmcache.domain.arena import ArenaAllocator, ArenaStats, Extent
    from lmcache.domain.eviction import EvictionPolicy
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_entry import Entry
    from lmcache.ports.clock import Clock
    from lmcache.ports.events import EventSink

_ON_DEMAND_ROUNDS = 16


class ClearReport(NamedTuple):
    """What a clear did and what it left.

    Objects removed; read-locked ones kept (without force); live write reservations kept; removed keys whose
    memory waits for their readers (retired) and those bytes.
    """

    removed: int
    locked: int
    writing: int
    retired: int
    retired_bytes: int


class LockCounts(NamedTuple):
    """Live locks: read-locked objects (retired ones included), their read locks, write-locked objects."""

    read_locked_objects: int
    read_locks: int
    write_locked_objects: int


class Retired:
    """Memory of force-removed objects of one key, kept while readers may still copy out of it."""

    __slots__ = ("deadline", "extents", "readers")

    def __init__(self, extent: Extent, readers: int, deadline: float) -> None:
        self.extents = [extent]
        self.readers = readers
        self.deadline = deadline

    @property
    def size(self) -> int:
        """Bytes held."""
        return sum(extent.size for extent in self.extents)


class L1Core:
    """Index state plus maintenance; see `L1Manager` for the constructor arguments."""

    def __init__(
        self,
        arena: ArenaAllocator,
        policy: EvictionPolicy,
        clock: Clock,
        events: EventSink | None = None,
        *,
        write_ttl_s: float = 600.0,
        read_ttl_s: float = 300.0,
    ) -> None:
        if write_ttl_s <= 0 or read_ttl_s <= 0:
            raise ValueError("lock TTLs must be > 0 seconds")
        self.arena = arena
        self.policy = policy
        self._clock = clock
        self._events: EventSink = events if events is not None else NullEventSink()
        self.write_ttl_s = write_ttl_s
        self.read_ttl_s = read_ttl_s
        self._lock = threading.Lock()
        self._entries: dict[ObjectKey, Entry] = {}
        self._retired: dict[ObjectKey, Retired] = {}
        self._deadlines: DeadlineHeap[ObjectKey] = DeadlineHeap()
        self._salt_bytes: dict[str, int] = {}
        self._now = clock.monotonic()

    # ------------------------------------------------------------ maintenance
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

    @property
    def retired_count(self) -> int:
        """Keys of objects removed by force whose memory waits for their readers."""
        return len(self._retired)

    @property
    def retired_bytes(self) -> int:
        """Memory of retired objects, waiting for their readers."""
        return sum(r.size for r in list(self._retired.values()))

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

    @property
    def object_count(self) -> int:
        """Objects in L1, reservations included."""
        return len(self._entries)

    # -------------------------------------------------------------- internals
    def _tick(self) -> float:
        self._now = self._clock.monotonic()
        return self._now

    def _is_current(self, key: ObjectKey, deadline: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.deadline == deadline and entry.locked

    def _evictable(self, key: ObjectKey) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        state = entry.state  # Entry's packing: readers << 2 | temporary << 1 | ready
        return (
            bool(state & 1)
            and (state < 4 or entry.deadline <= self._now)
            and key not in self._retired  # an old reader of the key may be copying out of it
        )

    def _alloc_batch(self, sizes: list[int], evicted: list[tuple[ObjectKey, int]]) -> list[Extent | None]:
        """Extents for `sizes`: back to back from one run when equal and they fit, else one by one."""
        if len(sizes) > 1 and sizes.count(sizes[0]) == len(sizes):
            extents: list[Extent | None] = list(self.arena.alloc_many(sizes[0], len(sizes)))
            if extents:
                return extents
        return [self._alloc(size, evicted) for size in sizes]

    def _forcible(self, key: ObjectKey, force: bool) -> bool:
        """A forced removal takes ready objects and expired reservations, never a live reservation."""
        entry = self._entries[key]
        return force and (entry.ready or entry.deadline <= self._now)

    def _alloc(self, size: int, evicted: list[tuple[ObjectKey, int]]) -> Extent | None:
        extent = self.arena.alloc(size)
        rounds = 0
        while extent is None and rounds < _ON_DEMAND_ROUNDS:
            victims = self.policy.victims(size << rounds, self._evictable)
            if not victims:
                break
            evicted.extend((key, self._free(key, self._entries[key])) for key in victims)
            extent = self.arena.alloc(size)
            rounds += 1
        return extent

    def _free(self, key: ObjectKey, entry: Entry) -> int:
        del self._entries[key]
        if entry.ready:
            self.policy.remove(key)
        return self._free_memory(key, entry)

    def _free_memory(self, key: ObjectKey, entry: Entry) -> int:
        return self._free_extent(key, entry.offset, entry.size)

    def _free_extent(self, key: ObjectKey, offset: int, size: int) -> int:
        self.arena.free_at(offset, size)
        left = self._salt_bytes[key.cache_salt] - size
        if left:
            self._salt_bytes[key.cache_salt] = left
        else:
            del self._salt_bytes[key.cache_salt]
        return size

    def _retire(self, key: ObjectKey, entry: Entry) -> int:
        """Take a read entry out of the index; its memory stays until its readers let go (module doc)."""
        del self._entries[key]
        self.policy.remove(key)
        live = entry.readers if entry.deadline > self._now else 0
        retired = self._retired.get(key)
        if retired is None:
            self._retired[key] = Retired(entry.extent, live, entry.deadline)
        else:  # a successor of a retired object, removed by force in turn: one pool of locks per key
            retired.extents.append(entry.extent)
            retired.readers += live
            retired.deadline = max(retired.deadline, entry.deadline)
        return entry.size

    def _release_retired(self, key: ObjectKey) -> None:
        for extent in self._retired.pop(key).extents:
            self._free_extent(key, extent.offset, extent.size)

    def _read_live(self, entry: Entry | None) -> bool:
        """Whether `entry` is a ready object with read locks that did not expire."""
        return entry is not None and entry.ready and entry.readers > 0 and entry.deadline > self._now

    def _held(self, key: ObjectKey, entry: Entry) -> bool:
        return entry.ready and (self._read_live(entry) or key in self._retired)

    def _remove_all(
        self, keys: Iterable[ObjectKey], reason: EvictionReason, *, retire_held: bool = False
    ) -> tuple[int, int]:
        """Take `keys` out of the index; their memory goes back to the arena in one sorted pass."""
        removed: list[tuple[ObjectKey, int]] = []
        freed: list[tuple[int, int]] = []
        salts = self._salt_bytes
        entries, policy = self._entries, self.policy
        for key in keys:
            entry = entries[key]
            if retire_held and self._held(key, entry):
                removed.append((key, self._retire(key, entry)))
                continue
            del entries[key]
            if entry.state & 1:
                policy.remove(key)
            freed.append((entry.offset, entry.size))
            salts[key.cache_salt] -= entry.size
            removed.append((key, entry.size))
        if freed:
            self.arena.free_many(freed)
            for salt in {key.cache_salt for key, _ in removed}:
                if salts.get(salt) == 0:
                    del salts[salt]
        self._publish_removed(removed, reason)
        return len(removed), sum(size for _, size in removed)

    def _drop_write(self, key: ObjectKey, entry: Entry, *, expired: bool) -> None:
        self._free(key, entry)
        self._events.publish(L1WriteAborted((key,), expired=expired))

    def _publish_removed(self, removed: list[tuple[ObjectKey, int]], reason: EvictionReason) -> None:
        if removed:
            keys = tuple(key for key, _ in removed)
            self._events.publish(L1Removed(keys, sum(size for _, size in removed), reason))
