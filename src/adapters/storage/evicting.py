"""Per-adapter L2 eviction as a wrapper: keeps one adapter under its capacity by deleting its coldest objects.

Built by the L2 factory around an adapter whose spec has `"eviction"` (domain/l2_eviction.py holds the
policy and the numbers). Usage is counted from what goes through this wrapper: each stored object counts
its payload plus its header (object_format.py); deletes and evictions subtract it (an object the adapter
quarantined on a failed load keeps counting until eviction reaches it and its delete finds nothing). At
first use the wrapper lists the adapter (where it can list) and counts every object found with the mean
size of its cache_salt from `usage()` (the port has no per-key size). Before a store, the wrapper plans
(watermark batch, room on demand), deletes the victims through the adapter, and only then forwards the
store; an object that still does not fit (`noop`, or everything pinned) is refused, counted in
`capacity_rejections`. Keys pinned by `lookup_and_lock` (an in-flight prefetch) are never chosen. A
successful load is a use (LRU/ARC order).

Evictions are published as `L2Evicted` events (an `L2Deleted`), so metrics count them and the
coordinator's directory drops the keys.

Fleet rule (per-adapter eviction and the coordinator's fleet eviction do not fight): per-adapter eviction
keeps one tier under its physical capacity; the coordinator keeps each tenant under its fleet quota on
the first adapter. Each side's deletions reach the other: ours as `L2Deleted` events the coordinator
subtracts, the coordinator's `DELETE /l2` through this wrapper, which stops counting those bytes. Neither
re-stores what the other deleted, so the worst case is both freeing for the same pressure (over-eviction,
bounded by the two ratios), never an oscillation. Quotas on a shared tier are the coordinator's alone:
the configuration refuses IsolatedLRU on a `shared` adapter of a server that has a coordinator.

Departures: with `shared`, objects other servers wrote are counted only as far as the start-up listing
saw them (their later stores do not pass through here); the adapter's own capacity check (fs) stays,
as the last guard. The first call waits for the start-up listing (shielded: a caller's deadline does not
cancel it, the next call waits for the same listing).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_state import AdapterCounters, LockTable
from lmcache.adapters.storage.object_format import header_len_for, key_name
from lmcache.domain.events import L2Evicted
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l2_eviction import L2Capacity, L2EvictionStats
    from lmcache.ports.events import EventSink
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("EvictingL2Adapter",)

logger = logging.getLogger(__name__)
_LIST_PAGE = 1000


def stored_size(key: ObjectKey, payload_bytes: int, align: int = 64) -> int:
    """Bytes one object takes in a backend: header (key name included) plus payload."""
    return header_len_for(key_name(key).encode(), align) + payload_bytes


class EvictingL2Adapter:
    """Eviction wrapper around `inner`; see the module docstring.

    Args:
        inner: The adapter (already built).
        capacity: Its usage and policy.
        index: Its position in the cascade (0-based), for events.
        name: How logs name it (`#1 (fs)`).
        events: Where `L2Evicted` goes (None: nowhere).
        header_align: The backend's header alignment (4096 for fs with O_DIRECT).
    """

    def __init__(
        self,
        inner: L2Adapter,
        capacity: L2Capacity,
        index: int = 0,
        name: str = "L2",
        events: EventSink | None = None,
        header_align: int = 64,
    ) -> None:
        self.inner = inner
        self.capacity = capacity
        self.index = index
        self.name = name
        self._events = events
        self._align = header_align
        self._pins = LockTable()
        self._storing: Counter[ObjectKey] = Counter()
        self._lock: asyncio.Lock | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def counters(self) -> AdapterCounters:
        """The inner adapter's counters (a fresh set when it keeps none)."""
        counters = getattr(self.inner, "counters", None)
        return counters if isinstance(counters, AdapterCounters) else AdapterCounters()

    def eviction_stats(self) -> L2EvictionStats:
        """Usage, capacity and evictions (for `/status` and metrics; read from any thread)."""
        return self.capacity.stats()

    # -- start-up listing ----------------------------------------------------------------------------------
    async def _ensure_ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._rebuild())
        await asyncio.shield(self._ready)

    async def _rebuild(self) -> None:
        keys: list[ObjectKey] = []
        try:
            usage = await self.inner.usage()
            cursor: str | None = None
            while True:
                page: KeyPage = await self.inner.list_keys(cursor, _LIST_PAGE)
                keys += page.keys
                cursor = page.next_cursor
                if cursor is None:
                    break
        except Exception as exc:  # a backend down at start-up: count from what is stored from now on
            logger.warning("L2 adapter %s: start-up listing for eviction failed: %r", self.name, exc)
            return
        per_salt = Counter(k.cache_salt for k in keys)
        for key in keys:
            if key not in self.capacity:
                count = per_salt[key.cache_salt]
                salt_bytes = usage.by_salt.get(key.cache_salt, 0)
                mean = salt_bytes // count if salt_bytes else stored_size(key, 0, self._align)
                self.capacity.stored(key, mean)
        if keys:
            logger.info(
                "L2 adapter %s: eviction counts %d existing objects, %d bytes of %d",
                self.name,
                len(keys),
                self.capacity.used_bytes,
                self.capacity.capacity_bytes,
            )

    # -- port ---------------------------------------------------------------------------------------------
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Make room (evicting), then store what fits; see the module docstring."""
        await self._ensure_ready()
        sizes = [stored_size(k, b.nbytes, self._align) for k, b in zip(keys, buffers, strict=True)]
        fresh = [i for i, k in enumerate(keys) if k not in self.capacity and not self._storing[k]]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            victims = self.capacity.plan(sum(sizes[i] for i in fresh), self._evictable)
            if victims:
                await self._evict(victims)
            admitted = set()
            for i in fresh:
                if self.capacity.fits(sizes[i]):
                    self.capacity.reserved_bytes += sizes[i]
                    admitted.add(i)
                else:
                    self.capacity.reject()
                    self.counters.capacity_rejections += 1
                    self.counters.store_failures += 1
        send = [i for i in range(len(keys)) if i in admitted or i not in fresh]
        for i in send:
            self._storing[keys[i]] += 1
        out = [False] * len(keys)
        try:
            results = await self.inner.store([keys[i] for i in send], [buffers[i] for i in send])
            for i, ok in zip(send, results, strict=True):
                out[i] = bool(ok)
        finally:
            for i in send:
                self._storing[keys[i]] -= 1
                if self._storing[keys[i]] <= 0:
                    del self._storing[keys[i]]
                if i in admitted:
                    self.capacity.reserved_bytes -= sizes[i]
                if out[i]:
                    self.capacity.stored(keys[i], sizes[i])
        return out

    def _evictable(self, key: ObjectKey) -> bool:
        return not self._pins.is_locked(key) and not self._storing[key]

    async def _evict(self, victims: list[ObjectKey]) -> None:
        try:
            removed = await self.inner.delete(victims)
        except Exception as exc:
            logger.warning("L2 adapter %s: eviction of %d objects failed: %r", self.name, len(victims), exc)
            return
        # A key the backend no longer had (deleted behind our back) is gone either way.
        freed = self.capacity.evicted(victims)
        gone = tuple(k for k, ok in zip(victims, removed, strict=False) if ok)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("L2 adapter %s: evicted %d objects (%d bytes)", self.name, len(victims), freed)
        if self._events is not None and gone:
            self._events.publish(L2Evicted(self.index, gone, freed))

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Forwarded; the hits are pinned here too, so eviction skips them until `unlock`."""
        await self._ensure_ready()
        present = await self.inner.lookup_and_lock(keys)
        self._pins.lock(keys, [bool(p) for p in present])
        return present

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Forwarded; a hit is a use."""
        results = await self.inner.load(keys, buffers)
        self._after_load(keys, [bool(ok) for ok in results])
        return results

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """Forwarded (for a serde above); a hit is a use."""
        results: list[int | None] = await self.inner.load_sized(keys, buffers)  # type: ignore[attr-defined]
        self._after_load(keys, [size is not None for size in results])
        return results

    def _after_load(self, keys: Sequence[ObjectKey], oks: Sequence[bool]) -> None:
        for key, ok in zip(keys, oks, strict=False):
            if ok:
                self.capacity.used(key)

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Drop our pins and the inner adapter's."""
        self._pins.unlock(keys)
        await self.inner.unlock(keys)

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader pinned `key`."""
        probe: Any = getattr(self.inner, "is_locked", None)
        return self._pins.is_locked(key) or (callable(probe) and bool(probe(key)))

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Forwarded; the keys stop counting whatever the answer (absent ones are gone too)."""
        removed = await self.inner.delete(keys)
        for key in keys:
            self.capacity.removed(key)
        return removed

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Forwarded unchanged."""
        return await self.inner.list_keys(cursor, limit)

    async def usage(self) -> L2Usage:
        """The adapter's own usage, with the capacity eviction works against."""
        usage = await self.inner.usage()
        return L2Usage(usage.used_bytes, usage.objects, self.capacity.capacity_bytes, usage.by_salt)

    async def close(self) -> None:
        """Close the inner adapter."""
        await self.inner.close()
