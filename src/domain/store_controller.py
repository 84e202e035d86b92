"""Store controller: pushes committed L1 objects to every L2 adapter (`--l2-store-policy`).

`default` stores to all adapters and keeps L1; `skip_l1` stores to all adapters and then drops the L1
copy (at once when unlocked, else when its last reader leaves). Objects that no adapter accepted stay in
L1 under `skip_l1`, so a failing L2 never loses the only copy (a departure from "then delete" that only
matters on failure). The queue is bounded: when full, `submit` drops and counts rather than blocking the
data path. Read locks are held on the objects while the adapters copy from their extents.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import TYPE_CHECKING, Literal, get_args

from lmcache.domain.events import EvictionReason, L2Stored, L2StoreDropped
from lmcache.domain.null_events import NullEventSink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory
    from lmcache.ports.l2_adapter import L2Adapter

StorePolicy = Literal["default", "skip_l1"]
logger = logging.getLogger(__name__)


class StoreController:
    """Copies L1 objects to the L2 cascade; `submit` is thread-safe, the rest runs on the storage loop.

    Args:
        l1: The L1 store.
        memory: The arena bytes (views handed to the adapters).
        adapters: The L2 cascade, in order.
        policy: `default` or `skip_l1`.
        queue_size: Keys waiting at most; more are dropped (`L2StoreDropped`).
        batch_size: Keys handed to the adapters per call.
        deadline_s: Per adapter call; a late adapter counts as a failed store.
        events: Telemetry sink.
    """

    def __init__(
        self,
        l1: L1Manager,
        memory: L1Memory,
        adapters: Sequence[L2Adapter],
        *,
        policy: StorePolicy = "default",
        queue_size: int = 65536,
        batch_size: int = 64,
        deadline_s: float = 30.0,
        events: EventSink | None = None,
    ) -> None:
        if policy not in get_args(StorePolicy):
            raise ValueError(f"unknown L2 store policy {policy!r}")
        self._l1 = l1
        self._memory = memory
        self._adapters = list(adapters)
        self.policy: StorePolicy = policy
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.deadline_s = deadline_s
        self._events: EventSink = events if events is not None else NullEventSink()
        self._queue: collections.deque[ObjectKey] = collections.deque()
        self._qlock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self.dropped = 0
        self.stored = 0

    @property
    def pending(self) -> int:
        """Keys waiting in the queue."""
        return len(self._queue)

    def submit(self, keys: Sequence[ObjectKey]) -> int:
        """Queue committed keys for L2 (from any thread); returns how many were accepted."""
        if not self._adapters or not keys:
            return 0
        with self._qlock:
            room = max(0, self.queue_size - len(self._queue))
            accepted = list(keys[:room])
            self._queue.extend(accepted)
        dropped = len(keys) - len(accepted)
        if dropped:
            self.dropped += dropped
            self._events.publish(L2StoreDropped(dropped))
        if accepted and self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        return len(accepted)

    async def drain(self) -> int:
        """Store everything queued now, batch by batch; returns the keys processed."""
        done = 0
        while True:
            with self._qlock:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            if not batch:
                return done
            await self._store_batch(batch)
            done += len(batch)

    async def run(self) -> None:
        """Drain whenever keys arrive, until cancelled (run under the supervisor)."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        while True:
            await self.drain()
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _store_batch(self, batch: list[ObjectKey]) -> None:
        locked = [key for key, ok in zip(batch, self._l1.lock_read(batch), strict=True) if ok]
        try:
            views = []
            for key in locked:
                extent = self._l1.extent(key)
                if extent is None:  # cannot happen while locked; keep the batch consistent anyway
                    raise RuntimeError(f"locked object {key.short()} has no extent")
                views.append(self._memory.view(extent.offset, extent.size))
            calls = (self._one(i, adapter, locked, views) for i, adapter in enumerate(self._adapters))
            results = await asyncio.gather(*calls)
        finally:
            self._l1.unlock_read(locked)
        stored_somewhere = [key for j, key in enumerate(locked) if any(r[j] for r in results)]
        self.stored += len(stored_somewhere)
        if self.policy == "skip_l1" and stored_somewhere:
            self._l1.mark_temporary(stored_somewhere, EvictionReason.STORED_TO_L2)

    async def _one(
        self, index: int, adapter: L2Adapter, keys: list[ObjectKey], views: list[memoryview]
    ) -> list[bool]:
        if not keys:
            return []
        try:
            results = await asyncio.wait_for(adapter.store(keys, views), self.deadline_s)
            if len(results) != len(keys):
                raise ValueError(f"adapter returned {len(results)} results for {len(keys)} keys")
        except Exception as exc:  # an adapter failure is a failed store, never a stalled cascade
            logger.warning("L2 adapter #%d store failed: %r", index, exc)
            results = [False] * len(keys)
        ok = sum(results)
        sizes = tuple(len(v) if r else 0 for v, r in zip(views, results, strict=True))
        self._events.publish(L2Stored(index, tuple(keys), ok, len(keys) - ok, sum(sizes), sizes))
        return results
