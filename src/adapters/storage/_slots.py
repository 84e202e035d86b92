"""Fixed-slot L2 tiers (raw_block, dax): one object per slot, an in-memory index, a free-slot stack.

Subclasses supply blocking slot I/O (`_write_slot`, `_read_slot`, `_invalidate_slot`) run on a thread
pool, and how the index survives a restart. An object is header + payload (object_format.py) at the
start of its slot; one that does not fit a slot, or finds no free slot, is a refused store
(`capacity_rejections`). A load verifies key, size and checksum; a damaged slot leaves the index and is
freed (quarantine) unless its entry changed meanwhile. `delete` frees a slot at once; a slot whose key
a reader pinned returns to the free stack only at `unlock`, so it is not rewritten under the reader.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_mixins import SizedLoads
from lmcache.adapters.storage._adapter_state import (
    AdapterCounters,
    InFlight,
    LockTable,
    page_of,
    tracked,
    usage_by_salt,
)
from lmcache.adapters.storage._blocking import run_jobs
from lmcache.adapters.storage.object_format import (
    BufferMismatchError,
    CorruptObjectError,
    encode_header,
    header_len_for,
    key_name,
    parse_key_name,
)
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("SlotL2Base",)


class SlotL2Base(SizedLoads, ABC):
    """The port over fixed slots; see the module docstring."""

    kind = "slot"
    header_align = 64
    log: logging.Logger

    def __init__(self, n_slots: int, slot_bytes: int, workers: int, persist: bool) -> None:
        self.n_slots = n_slots
        self.slot_bytes = slot_bytes
        self.persist = persist
        self.counters = AdapterCounters()
        self._index: dict[ObjectKey, tuple[int, int]] = {}  # key -> (slot, stored bytes)
        self._free = list(range(n_slots - 1, -1, -1))  # a stack: low slots first
        self._held: dict[ObjectKey, int] = {}  # deleted while pinned: slot freed at unlock
        self._names: list[str] | None = None
        self._locks = LockTable()
        self._inflight = InFlight()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"lmcache-{self.kind}-l2")
        self.dirty = False

    # -- hooks ---------------------------------------------------------------------------------------
    def _write_slot(self, slot: int, key: ObjectKey, payload: memoryview) -> int:
        """Write header + payload into `slot` (on a pool thread); returns the stored size."""
        header = encode_header(key, payload, align=self.header_align)
        self._write_object(slot, header, payload)
        return len(header) + payload.nbytes

    @abstractmethod
    def _write_object(self, slot: int, header: bytes, payload: memoryview) -> None:
        """Write an encoded header and its payload at the start of `slot`, durably (the medium's way)."""

    @abstractmethod
    def _read_slot(self, slot: int, size: int, key: ObjectKey, dest: memoryview, exact: bool) -> int:
        """Read and verify a slot's object into (the start of) `dest`; returns the payload size."""

    @abstractmethod
    def _invalidate_slot(self, slot: int) -> None:
        """Make `slot` read as empty, so a restart does not index it again."""

    # -- index ---------------------------------------------------------------------------------------
    def adopt(self, entries: Sequence[tuple[ObjectKey, int, int]]) -> None:
        """Index `(key, slot, size)` entries found at start-up and take their slots off the free stack."""
        taken = set()
        for key, slot, size in entries:
            if 0 <= slot < self.n_slots and slot not in taken:
                self._index[key] = (slot, size)
                taken.add(slot)
        self._free = [s for s in self._free if s not in taken]
        self._names = None

    def _drop(self, key: ObjectKey) -> int | None:
        entry = self._index.pop(key, None)
        if entry is None:
            return None
        self._names = None
        self.dirty = True
        if self._locks.is_locked(key):
            self._held[key] = entry[0]
        else:
            self._free.append(entry[0])
        return entry[0]

    # -- port ----------------------------------------------------------------------------------------
    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Write new objects into free slots; keys already indexed count as stored."""
        cancelled = threading.Event()
        plan: list[tuple[ObjectKey, int, memoryview]] = []
        seen = set()
        for key, buf in zip(keys, buffers, strict=True):
            if key in self._index or key in seen:
                continue
            hlen = header_len_for(key_name(key).encode(), self.header_align)
            if hlen + buf.nbytes > self.slot_bytes or not self._free:
                self.counters.capacity_rejections += 1
                self.counters.store_failures += 1
                continue
            seen.add(key)
            plan.append((key, self._free.pop(), buf))

        def job(key: ObjectKey, slot: int, buf: memoryview) -> Any:
            def run() -> int | bool:
                if cancelled.is_set():
                    return False
                return self._write_slot(slot, key, buf)

            return run

        def settle(results: list[Any]) -> None:
            for (key, slot, _), outcome in zip(plan, results, strict=True):
                if isinstance(outcome, int) and not isinstance(outcome, bool):
                    self._index[key] = (slot, outcome)
                    self._names = None
                    self.dirty = True
                    self.counters.stores += 1
                else:
                    self._free.append(slot)
                    self.counters.store_failures += 1
                    if isinstance(outcome, BaseException):
                        self.counters.backend_errors += 1
                        self.log.warning("%s L2: store of %s failed: %r", self.kind, key.short(), outcome)

        await run_jobs(self._pool, [job(k, s, b) for k, s, b in plan], cancelled, settle)
        return [key in self._index for key in keys]

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Answer from the index; pin the hits."""
        return self._locks.lock(keys, [key in self._index for key in keys])

    @tracked(None)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[int | None]:
        """Read and verify each object into its buffer; a damaged slot is dropped and freed."""
        cancelled = threading.Event()
        wanted = [(k, b, self._index[k]) for k, b in zip(keys, buffers, strict=True) if k in self._index]

        def job(key: ObjectKey, buf: memoryview, entry: tuple[int, int]) -> Any:
            def run() -> int | bool:
                if cancelled.is_set():
                    return False
                return self._read_slot(entry[0], entry[1], key, buf, exact)

            return run

        results = await run_jobs(self._pool, [job(k, b, e) for k, b, e in wanted], cancelled)
        outcomes = {k: (e, r) for (k, _, e), r in zip(wanted, results, strict=True)}
        out: list[int | None] = []
        for key in keys:
            entry, outcome = outcomes.get(key, (None, False))
            self.counters.loads += 1
            loaded = isinstance(outcome, int) and not isinstance(outcome, bool)
            if not loaded:
                self.counters.load_misses += 1
                self._load_failed(key, entry, outcome)
            out.append(outcome if loaded else None)
        return out

    def _load_failed(self, key: ObjectKey, entry: tuple[int, int] | None, outcome: Any) -> None:
        if isinstance(outcome, BufferMismatchError) or not isinstance(outcome, BaseException):
            return
        if not isinstance(outcome, CorruptObjectError):
            self.counters.backend_errors += 1
            self.log.warning("%s L2: load of %s failed: %r", self.kind, key.short(), outcome)
            return
        self.counters.corrupt += 1
        self.log.warning("%s L2: corrupt object %s: %s", self.kind, key.short(), outcome)
        if entry is not None and self._index.get(key) == entry:
            slot = self._drop(key)
            if slot is not None:
                self._invalidate_slot(slot)
            self.counters.quarantined += 1

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader pinned `key` (a delete from the HTTP API skips it)."""
        return self._locks.is_locked(key)

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Drop one pin per key; a slot deleted while pinned is freed with its last pin."""
        self._locks.unlock(keys)
        for key in keys:
            if key in self._held and not self._locks.is_locked(key):
                self._free.append(self._held.pop(key))

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Drop index entries and invalidate their slots (freed now, or at unlock when pinned)."""
        out = []
        for key in keys:
            slot = self._drop(key)
            if slot is not None:
                await asyncio_run(self._pool, self._invalidate_slot, slot)
            out.append(slot is not None)
        return out

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Indexed keys ordered by object name; the cursor is the last name of the previous page."""
        if self._names is None:
            self._names = sorted(key_name(k) for k in self._index)
        names, nxt = page_of(self._names, cursor, limit)
        return KeyPage(tuple(parse_key_name(n) for n in names), nxt)

    async def usage(self) -> L2Usage:
        """Bytes of the stored objects (headers included); capacity is every slot."""
        used, count, by_salt = usage_by_salt((k, size) for k, (_, size) in self._index.items())
        return L2Usage(used, count, self.n_slots * self.slot_bytes, by_salt)

    async def drain(self) -> None:
        """Finish transfers in flight and drop the objects unless `persist_enabled`."""
        await self._inflight.drain()
        if not self.persist and self._index:
            await self.delete(list(self._index))


async def asyncio_run(pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
    """Run a blocking call on `pool` from the event loop."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
