"""The L1 object store: index, lock state machine, arena accounting and eviction behind one lock.

Per key: absent -> write-locked (reserved) -> ready <-> read-locked(n) -> absent. Writes are two-phase
(`reserve`, then `finish` or `abort`); only ready objects are visible. Every lock has a deadline on the
injected clock (write TTL, read TTL), kept in a heap: a dead client's locks are recovered by `reap_expired`
and, lazily, by any operation that meets them. "Temporary" objects (prefetched under the `default`
prefetch policy, or stored to L2 under `skip_l1`) leave L1 when their last read lock is released.

Thread-safety: every public method takes the manager's lock; events are published under it (the
EventSink contract keeps that cheap).

One class in three layers, each module named for what it holds: `l1_index.py` (the state and the
primitives that keep it consistent), `l1_maintenance.py` (reaping, eviction, delete, clear, usage) and
this module (the engine's writes and reads, and the admin listing).
"""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, NamedTuple, cast

from lmcache.domain.events import AllocationFailed, EvictionReason, L1Read, L1WriteAborted, L1WriteCommitted
from lmcache.domain.l1_entry import READY_BIT, Entry
from lmcache.domain.l1_maintenance import L1Maintenance

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.keys import ObjectKey

_OFFSET, _SIZE, _SALT = (
    operator.attrgetter("offset"),
    operator.attrgetter("size"),
    operator.attrgetter("cache_salt"),
)
# Rounds of on-demand eviction (each asks for twice the bytes) before an allocation gives up.
_ON_DEMAND_ROUNDS = 16
# Entries one listing page may scan under the lock when filters skip most of them (bounds the lock hold).
_SCAN_FACTOR = 16


class ObjectInfo(NamedTuple):
    """One resident object as `/cache/objects` lists it: its size, whether it is visible, live read locks."""

    key: ObjectKey
    size: int
    ready: bool
    readers: int


class L1Manager(L1Maintenance):
    """Thread-safe L1 object store.

    Args:
        arena: Extent accounting for the L1 arena.
        policy: Eviction order (LRU, IsolatedLRU, noop).
        clock: Time source for lock TTLs.
        events: Telemetry sink (default: drop).
        write_ttl_s: Lifetime of a write reservation (`--l1-write-ttl-seconds`).
        read_ttl_s: Lifetime of read locks, refreshed by every new lock (`--l1-read-ttl-seconds`).
    """

    # ----------------------------------------------------------------- writes
    def reserve(self, keys: Sequence[ObjectKey], sizes: int | Sequence[int]) -> list[Extent | None]:
        """Reserve extents for writing; on-demand eviction makes room when an object does not fit.

        Args:
            keys: Objects to write (a request's chunks: one batch).
            sizes: One size for all keys, or one per key, in bytes.

        Returns:
            Per key: the write-locked extent, or None when the key is already present / being written,
            or when no room could be made (an `AllocationFailed` event then says so).
        """
        per_key = [sizes] * len(keys) if isinstance(sizes, int) else list(sizes)
        out: list[Extent | None] = [None] * len(keys)
        evicted: list[tuple[ObjectKey, int]] = []
        reserved: list[ObjectKey] = []
        with self._lock:
            now = self._tick()
            deadline = now + self.write_ttl_s
            wanted = self._reservable(keys, now)
            extents = self._alloc_batch([per_key[i] for i in wanted], evicted)
            if None in extents:  # some allocation failed: key by key
                entries, salts = self._entries, self._salt_bytes
                for i, extent in zip(wanted, extents, strict=True):
                    key = keys[i]
                    if extent is None:
                        self._events.publish(AllocationFailed(key, per_key[i]))
                        continue
                    entries[key] = Entry(extent.offset, extent.size, deadline)
                    reserved.append(key)
                    salts[key.cache_salt] = salts.get(key.cache_salt, 0) + extent.size
                    out[i] = extent
            else:
                reserved = self._index_all([keys[i] for i in wanted], cast("list[Extent]", extents), deadline)
                for i, extent in zip(wanted, extents, strict=True):
                    out[i] = extent
            self._deadlines.push(deadline, tuple(reserved), self._live)
            self._publish_removed(evicted, EvictionReason.ON_DEMAND)
        return out

    def _index_all(self, keys: list[ObjectKey], extents: list[Extent], deadline: float) -> list[ObjectKey]:
        """Index a batch whose every key got an extent: map and update calls in C, no loop per key here.

        The usual store (64 new chunks of one tenant) spent half its reserve time in the per-key loop.
        """
        sizes = list(map(_SIZE, extents))
        made = map(Entry, map(_OFFSET, extents), sizes, itertools.repeat(deadline))
        self._entries.update(zip(keys, made, strict=True))
        salts = self._salt_bytes
        tenants = set(map(_SALT, keys))
        if len(tenants) == 1:
            salt = tenants.pop()
            salts[salt] = salts.get(salt, 0) + sum(sizes)
        else:
            for key, size in zip(keys, sizes, strict=True):
                salts[key.cache_salt] = salts.get(key.cache_salt, 0) + size
        return keys

    def _alloc_batch(self, sizes: list[int], evicted: list[tuple[ObjectKey, int]]) -> list[Extent | None]:
        """Extents for `sizes`: back to back from one run when equal and they fit, else one by one."""
        if len(sizes) > 1 and sizes.count(sizes[0]) == len(sizes):
            extents: list[Extent | None] = list(self.arena.alloc_many(sizes[0], len(sizes)))
            if extents:
                return extents
        return [self._alloc(size, evicted) for size in sizes]

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

    def _reservable(self, keys: Sequence[ObjectKey], now: float) -> list[int]:
        """Positions of the keys that may be reserved now, each key once.

        A key may be reserved when absent or when its reservation expired (dropped here); a retired key
        may be, its new object superseding the retired one (l1_index's module docstring).
        """
        entries = self._entries
        if entries.keys().isdisjoint(keys) and len(set(keys)) == len(keys):  # the usual batch: all new
            return list(range(len(keys)))
        wanted: list[int] = []
        seen: set[ObjectKey] = set()
        for i, key in enumerate(keys):
            if key in seen:
                continue
            seen.add(key)
            entry = entries.get(key)
            if entry is not None:
                if entry.ready or entry.deadline > now:
                    continue
                self._drop_write(key, entry, expired=True)
            wanted.append(i)
        return wanted

    def finish(self, keys: Iterable[ObjectKey], read_locks: int = 0, temporary: bool = False) -> list[bool]:
        """Commit reserved writes: they become visible (ready), optionally read-locked at once.

        Args:
            keys: Reserved keys whose bytes are written.
            read_locks: Read locks taken atomically with the commit (prefetch: `num_kv_readers`).
            temporary: Free the object when its last read lock is released.

        Returns:
            Per key: True when committed; False when not reserved or the reservation expired (then freed).
        """
        out: list[bool] = []
        committed: list[ObjectKey] = []
        nbytes = 0
        with self._lock:
            now = self._tick()
            entries, admit = self._entries, self.policy.admit
            state = Entry.committed_state(read_locks, temporary)
            deadline = now + self.read_ttl_s if read_locks else 0.0
            for key in keys:
                entry = entries.get(key)
                if entry is None or entry.state & READY_BIT:  # absent, or already committed
                    out.append(False)
                    continue
                if entry.deadline <= now:
                    self._drop_write(key, entry, expired=True)
                    out.append(False)
                    continue
                entry.state, entry.deadline = state, deadline  # committed: visible, `read_locks` readers
                admit(key, entry.size)
                committed.append(key)
                nbytes += entry.size
                out.append(True)
            if committed:
                if read_locks:
                    self._deadlines.push(now + self.read_ttl_s, tuple(committed), self._live)
                self._events.publish(L1WriteCommitted(tuple(committed), nbytes))
        return out

    def abort(self, keys: Iterable[ObjectKey]) -> int:
        """Drop write reservations (their bytes are never visible); returns how many were dropped."""
        dropped: list[ObjectKey] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and not entry.ready:
                    self._free(key, entry)
                    dropped.append(key)
            if dropped:
                self._events.publish(L1WriteAborted(tuple(dropped), expired=False))
        return len(dropped)

    def write_extent(self, key: ObjectKey) -> Extent | None:
        """The extent of a live write reservation, else None."""
        with self._lock:
            entry = self._entries.get(key)
            live = entry is not None and not entry.ready and entry.deadline > self._tick()
            return entry.extent if live and entry is not None else None

    # ------------------------------------------------------------------ reads
    def lock_read(self, keys: Sequence[ObjectKey], n: int = 1) -> list[bool]:
        """Take `n` read locks on each ready key (refreshing its read TTL) and mark it used.

        Returns:
            Per key: True when the object is ready and now locked.
        """
        return self._lock_ready(keys, n, prefix=False)

    def lock_prefix(self, keys: Sequence[ObjectKey], n: int = 1) -> int:
        """Read-lock the leading run of ready keys; returns its length (nothing after a miss is locked)."""
        return len(self._lock_ready(keys, n, prefix=True))

    def _lock_ready(self, keys: Sequence[ObjectKey], n: int, *, prefix: bool) -> list[bool]:
        """Read-lock the ready keys (with `prefix`, only the leading run); per key reached, whether locked."""
        out: list[bool] = []
        locked: list[ObjectKey] = []
        with self._lock:
            now = self._tick()
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or not entry.ready:
                    if prefix:
                        break
                    out.append(False)
                    continue
                self._add_readers(key, entry, n, now)
                locked.append(key)
                out.append(True)
            self._deadlines.push(now + self.read_ttl_s, tuple(locked), self._live)
            self._events.publish(L1Read(len(keys), len(locked)))
        return out

    def unlock_read(self, keys: Iterable[ObjectKey], n: int = 1) -> None:
        """Release `n` read locks per key (never below zero); temporary objects leave at zero.

        A key with a retired object gives its locks back there first (l1_index's docstring says why).
        """
        removed: list[tuple[ObjectKey, int]] = []
        with self._lock:
            now = self._tick()
            for key in keys:
                entry = self._entries.get(key)
                left = self._unlock_retired(key, entry, n, now) if self._retired else n
                if entry is None or not entry.ready:
                    continue
                if left:
                    entry.readers = 0 if entry.deadline <= now else max(0, entry.readers - left)
                    if entry.readers == 0:
                        entry.deadline = 0.0
                if entry.readers == 0 and entry.temporary and key not in self._retired:
                    removed.append((key, self._free(key, entry)))
            self._publish_removed(removed, EvictionReason.TEMPORARY)

    def _unlock_retired(self, key: ObjectKey, entry: Entry | None, n: int, now: float) -> int:
        """Take up to `n` locks from the key's retired object; free it once no lock on the key is left.

        Returns:
            The locks still to release on the key's current object.
        """
        retired = self._retired.get(key)
        if retired is None:
            return n
        live = retired.readers if retired.deadline > now else 0
        taken = min(n, live)
        retired.readers = live - taken
        current_live = (
            entry is not None and entry.ready and entry.readers > n - taken and entry.deadline > now
        )
        if retired.readers == 0 and not current_live:
            self._release_retired(key)
        return n - taken

    def _add_readers(self, key: ObjectKey, entry: Entry, n: int, now: float) -> None:
        state = entry.state  # readers << 2 | flags (l1_entry.py): one read and one write per lookup key
        if state >= 4 and entry.deadline <= now:
            state &= 3  # expired locks count for nothing
        entry.state = state + (n << 2)
        entry.deadline = now + self.read_ttl_s  # the caller pushes one heap item for the whole batch
        self.policy.touch(key)

    def readers(self, key: ObjectKey) -> int:
        """Live read locks on a key (0 when absent, unlocked or expired), a retired object's included.

        A reader that finds its object retired by a forced clear still sees its lock here, so it releases it
        (and with it the memory) instead of leaving both to the lock's TTL.
        """
        with self._lock:
            now = self._tick()
            entry = self._entries.get(key)
            live = entry.readers if entry is not None and entry.ready and entry.deadline > now else 0
            retired = self._retired.get(key)
            if retired is not None and retired.deadline > now:
                live += retired.readers
            return live

    def extent(self, key: ObjectKey) -> Extent | None:
        """The extent of a ready object (meaningful while the caller holds a read lock).

        None for an object a forced clear retired and nothing replaced yet: its reader fails (the engine
        recomputes) and lets go. Once a new store of the key committed, its readers copy the new object.
        """
        with self._lock:
            entry = self._entries.get(key)
            return entry.extent if entry is not None and entry.ready else None

    def contains(self, key: ObjectKey) -> bool:
        """True when the object is ready (visible)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.ready

    def prefix_len(self, keys: Sequence[ObjectKey]) -> int:
        """Length of the leading run of ready keys, without locking them."""
        with self._lock:
            for i, key in enumerate(keys):
                entry = self._entries.get(key)
                if entry is None or not entry.ready:
                    return i
            return len(keys)

    def touch(self, keys: Iterable[ObjectKey]) -> None:
        """Mark ready objects as recently used (LRU refresh)."""
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.ready:
                    self.policy.touch(key)

    # -------------------------------------------------------------- admin
    def objects_page(
        self, cursor: int, limit: int, model_name: str | None = None, cache_salt: str | None = None
    ) -> tuple[list[ObjectInfo], int | None]:
        """One page of resident objects (reservations included) in insertion order, for the admin API.

        The cursor counts index entries scanned, so objects that leave between pages may shift the next
        page by as many entries (a listing is a snapshot per page, not of the whole index). A page scans at
        most `limit * 16` entries, so a filter that matches little returns short pages rather than hold the
        lock long.

        Args:
            cursor: 0 for the first page, else the previous page's next cursor.
            limit: Objects per page at most (>= 1).
            model_name: Only objects of this model, when given.
            cache_salt: Only objects of this salt ("" = the default salt), when given.

        Returns:
            The page and the next cursor (None after the last entry).
        """
        if cursor < 0 or limit < 1:
            raise ValueError("cursor must be >= 0 and limit >= 1")
        out: list[ObjectInfo] = []
        with self._lock:
            now = self._tick()
            total = len(self._entries)
            scanned = 0
            for key, entry in itertools.islice(self._entries.items(), cursor, cursor + limit * _SCAN_FACTOR):
                scanned += 1
                if (model_name is None or key.model_name == model_name) and (
                    cache_salt is None or key.cache_salt == cache_salt
                ):
                    live = entry.readers if entry.ready and entry.deadline > now else 0
                    out.append(ObjectInfo(key, entry.size, entry.ready, live))
                    if len(out) == limit:
                        break
            nxt = cursor + scanned
        return out, (nxt if nxt < total else None)

    def retain(self, keys: Iterable[ObjectKey]) -> int:
        """Make ready objects normal again (no longer temporary); returns how many changed.

        A prefetch asked for by the coordinator loads objects to keep, even under the `default` prefetch
        policy whose loads otherwise leave L1 after their readers.
        """
        changed = 0
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.ready and entry.temporary:
                    entry.temporary = False
                    changed += 1
        return changed
