"""Sparse prefetch for CacheBlend (cacheblend.md §3.4 step 3, §5): every key on its own, no leading run.

A prefix lookup keeps only the leading run of chunks present in every row; CacheBlend's candidates are
scattered over the prompt ("all columns" policy), and the segmented prefix keeps what loaded past a gap.
So each key here is independent: L1 hits are read-locked at once, the rest are asked of every L2 adapter
(lookup-and-lock, under a deadline), loaded from the lowest-index adapter holding them into fresh L1
extents (at most `max_in_flight` at once) and committed with `num_kv_readers` read locks. A slow or
failing adapter turns into misses, never a stall. The caller owns every lock reported in `locked`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.events import L2Loaded

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("SparsePrefetcher", "SparseResult")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SparseResult:
    """Per key: `locked` = in L1 now and holding the requested read locks; `available` = in some tier."""

    locked: list[bool]
    available: list[bool]


class SparsePrefetcher:
    """Locks and loads keys independently of each other.

    Args:
        l1: The L1 store.
        memory: The arena bytes (load targets).
        adapters: The L2 cascade (lower index wins).
        temporary: Loaded objects leave L1 after their last reader (`--l2-prefetch-policy default`).
        max_in_flight: Concurrent L2 loads at most.
        deadline_s: Per adapter call.
        events: Telemetry sink (`L2Loaded`); None drops.
    """

    def __init__(
        self,
        l1: L1Manager,
        memory: L1Memory,
        adapters: Sequence[L2Adapter],
        *,
        temporary: bool = True,
        max_in_flight: int = 8,
        deadline_s: float = 5.0,
        events: EventSink | None = None,
    ) -> None:
        self._l1 = l1
        self._memory = memory
        self._adapters = list(adapters)
        self.temporary = temporary
        self.max_in_flight = max(1, max_in_flight)
        self.deadline_s = deadline_s
        self._events = events

    @property
    def has_adapters(self) -> bool:
        """Whether a prefetch can suspend (it must then run on the storage loop)."""
        return bool(self._adapters)

    def run_now(self, keys: Sequence[ObjectKey], readers: int) -> SparseResult:
        """L1 only (no adapters): lock what is there, on the calling thread."""
        locked = self._l1.lock_read(keys, readers)
        return SparseResult(locked, list(locked))

    async def run(self, keys: Sequence[ObjectKey], sizes: Sequence[int], readers: int) -> SparseResult:
        """Lock L1 hits, load the rest from L2 where some adapter has them.

        On an unexpected error every lock taken here is released before the error propagates.
        """
        locked = self._l1.lock_read(keys, readers)
        try:
            return await self._fill(keys, sizes, readers, locked)
        except BaseException:
            self._l1.unlock_read([k for k, ok in zip(keys, locked, strict=True) if ok], readers)
            raise

    async def _fill(
        self, keys: Sequence[ObjectKey], sizes: Sequence[int], readers: int, locked: list[bool]
    ) -> SparseResult:
        missing = [i for i, hit in enumerate(locked) if not hit]
        available = list(locked)
        if not missing or not self._adapters:
            return SparseResult(locked, available)
        asked = [keys[i] for i in missing]
        answers = await asyncio.gather(*(self._lookup(a, asked) for a in self._adapters))
        source = [-1] * len(asked)
        for index, answer in enumerate(answers):
            for j, present in enumerate(answer):
                if present and source[j] < 0:
                    source[j] = index
        try:
            for j, i in enumerate(missing):
                available[i] = source[j] >= 0
            wanted = [j for j in range(len(asked)) if source[j] >= 0]
            extents = self._l1.reserve([asked[j] for j in wanted], [sizes[missing[j]] for j in wanted])
            jobs = [(j, e) for j, e in zip(wanted, extents, strict=True) if e is not None]
            gate = asyncio.Semaphore(self.max_in_flight)
            oks = await asyncio.gather(
                *(self._load(gate, self._adapters[source[j]], asked[j], e) for j, e in jobs)
            )
            good = [j for (j, _), ok in zip(jobs, oks, strict=True) if ok]
            self._l1.abort(asked[j] for (j, _), ok in zip(jobs, oks, strict=True) if not ok)
            committed = self._l1.finish((asked[j] for j in good), readers, temporary=self.temporary)
            for j, ok in zip(good, committed, strict=True):
                locked[missing[j]] = ok
        finally:
            for adapter, answer in zip(self._adapters, answers, strict=True):
                held = [k for k, ok in zip(asked, answer, strict=True) if ok]
                if held:
                    await self._unlock(adapter, held)
        return SparseResult(locked, available)

    async def _lookup(self, adapter: L2Adapter, keys: list[ObjectKey]) -> list[bool]:
        try:
            answer = await asyncio.wait_for(adapter.lookup_and_lock(keys), self.deadline_s)
        except Exception as exc:
            logger.warning("L2 lookup for a blend prefetch failed or timed out: %r", exc)
            return [False] * len(keys)
        return list(answer) if len(answer) == len(keys) else [False] * len(keys)

    async def _unlock(self, adapter: L2Adapter, keys: list[ObjectKey]) -> None:
        try:
            await asyncio.wait_for(adapter.unlock(keys), self.deadline_s)
        except Exception as exc:
            logger.warning("L2 unlock after a blend prefetch failed: %r", exc)

    async def _load(
        self, gate: asyncio.Semaphore, adapter: L2Adapter, key: ObjectKey, extent: Extent
    ) -> bool:
        async with gate:
            try:
                view = self._memory.view(extent.offset, extent.size)
                result = await asyncio.wait_for(adapter.load([key], [view]), self.deadline_s)
                ok = len(result) == 1 and bool(result[0])
            except Exception as exc:
                logger.warning("L2 load of %s for a blend prefetch failed: %r", key.short(), exc)
                ok = False
        if self._events is not None:
            self._events.publish(L2Loaded(self._adapters.index(adapter), key, ok, extent.size if ok else 0))
        return ok
