"""Traced variants of the storage engine's classes, built only under `--trace-level storage`.

Each subclass records its public state-changing calls into a `TraceSink` and then runs the parent's code,
so with tracing off the server builds the plain classes and pays nothing. Recording happens under the L1
manager's lock (made reentrant here), so the order of the records is the order in which the calls took
effect on the index, also when many threads call at once.

Composite calls (an eviction-loop step, a lookup's prefetch) are recorded once, as themselves; the L1 calls
they make inside are not recorded, because a replay re-runs the composite call against its own engine
(where, at another L1 size, it takes other decisions). A `ContextVar` marks "inside a composite call": it
is per thread and per asyncio task, so a prefetch suspended on L2 I/O does not hide the calls of other
tasks on the same loop. A lookup's record carries its outcome (`outcome.prefix_chunks`), which the replay
uses to release exactly the locks the live engine kept.

Read-only queries (`readers`, `contains`, `objects_page`, `stats`, ...) are not recorded, except `extent`:
it is how every reader gets at an object's bytes, so it is the trace's "read".
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from lmcache.domain.events import EvictionReason
from lmcache.domain.eviction_loop import EvictionLoop, EvictionResult
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController, PrefetchResult
from lmcache.domain.quotas import QuotaTable
from lmcache.domain.store_controller import StoreController

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_index import ClearReport
    from lmcache.domain.prefetch_controller import PrefetchRequest
    from lmcache.domain.session_types import PrefetchJob
    from lmcache.ports.l2_adapter import L2Adapter
    from lmcache.ports.trace import TraceSink

__all__ = (
    "QUALNAMES",
    "TracedEvictionLoop",
    "TracedL1Manager",
    "TracedPrefetchController",
    "TracedQuotaTable",
    "TracedStoreController",
)

_L1 = "lmcache.domain.l1_manager.L1Manager"
QUALNAMES = {
    name: f"{_L1}.{name}"
    for name in (
        "reserve",
        "finish",
        "abort",
        "lock_read",
        "lock_prefix",
        "unlock_read",
        "extent",
        "delete",
        "clear",
        "evict",
        "evict_over_quota",
        "mark_temporary",
        "reap_expired",
        "touch",
        "retain",
    )
} | {
    "step": "lmcache.domain.eviction_loop.EvictionLoop.step",
    "run_job_now": "lmcache.domain.prefetch_controller.PrefetchController.run_job_now",
    "prefetch": "lmcache.domain.prefetch_controller.PrefetchController.prefetch",
    "submit": "lmcache.domain.store_controller.StoreController.submit",
    "l2_store": "lmcache.ports.l2_adapter.L2Adapter.store",
    "quota_set": "lmcache.domain.quotas.QuotaTable.set",
    "quota_delete": "lmcache.domain.quotas.QuotaTable.delete",
}
_Q = QUALNAMES

# True while a composite call runs on this thread / in this task: its inner L1 calls are not recorded.
_INSIDE: ContextVar[bool] = ContextVar("lmcache_trace_inside", default=False)


class TracedL1Manager(L1Manager):
    """`L1Manager` that records every state-changing call (and every `extent` read) before running it.

    Args:
        *args: `L1Manager`'s arguments.
        tracer: Where the records go.
        **kwargs: `L1Manager`'s keyword arguments.
    """

    def __init__(self, *args: Any, tracer: TraceSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Reentrant: the traced method holds it while recording and the parent's body takes it again, so
        # no other thread's call can slip between a record and the call it describes.
        self._lock = threading.RLock()  # type: ignore[assignment]
        self._tracer = tracer

    @property
    def trace_lock(self) -> threading.RLock:
        """The manager's (reentrant) lock: composite traced calls hold it to stay atomic in the trace."""
        return self._lock  # type: ignore[return-value]

    def _rec(self, name: str, args: dict[str, object]) -> None:
        if not _INSIDE.get():
            self._tracer.record(_Q[name], args)

    def reserve(self, keys: Sequence[ObjectKey], sizes: int | Sequence[int]) -> list[Extent | None]:
        """See `L1Manager.reserve`."""
        keys = list(keys)
        sizes = sizes if isinstance(sizes, int) else list(sizes)
        with self._lock:
            self._rec("reserve", {"keys": keys, "sizes": sizes})
            return super().reserve(keys, sizes)

    def finish(self, keys: Iterable[ObjectKey], read_locks: int = 0, temporary: bool = False) -> list[bool]:
        """See `L1Manager.finish`."""
        keys = list(keys)
        with self._lock:
            self._rec("finish", {"keys": keys, "read_locks": read_locks, "temporary": temporary})
            return super().finish(keys, read_locks, temporary)

    def abort(self, keys: Iterable[ObjectKey]) -> int:
        """See `L1Manager.abort`."""
        keys = list(keys)
        with self._lock:
            self._rec("abort", {"keys": keys})
            return super().abort(keys)

    def lock_read(self, keys: Sequence[ObjectKey], n: int = 1) -> list[bool]:
        """See `L1Manager.lock_read`."""
        keys = list(keys)
        with self._lock:
            self._rec("lock_read", {"keys": keys, "n": n})
            return super().lock_read(keys, n)

    def lock_prefix(self, keys: Sequence[ObjectKey], n: int = 1) -> int:
        """See `L1Manager.lock_prefix`."""
        keys = list(keys)
        with self._lock:
            self._rec("lock_prefix", {"keys": keys, "n": n})
            return super().lock_prefix(keys, n)

    def unlock_read(self, keys: Iterable[ObjectKey], n: int = 1) -> None:
        """See `L1Manager.unlock_read`."""
        keys = list(keys)
        with self._lock:
            self._rec("unlock_read", {"keys": keys, "n": n})
            super().unlock_read(keys, n)

    def extent(self, key: ObjectKey) -> Extent | None:
        """See `L1Manager.extent` (recorded: it is how readers reach an object's bytes).

        A read changes nothing, so it is recorded outside the lock: its place among other threads' calls
        may differ by a call or two, which a replay does not notice.
        """
        if not _INSIDE.get():
            self._tracer.record(_Q["extent"], {"key": key})
        return super().extent(key)

    def delete(self, keys: Iterable[ObjectKey], force: bool = False) -> int:
        """See `L1Maintenance.delete`."""
        keys = list(keys)
        with self._lock:
            self._rec("delete", {"keys": keys, "force": force})
            return super().delete(keys, force)

    def clear(self, force: bool = False) -> int:
        """See `L1Maintenance.clear` (recorded once, by `clear_report`, which it calls)."""
        return self.clear_report(force).removed

    def clear_report(self, force: bool = False) -> ClearReport:
        """See `L1Maintenance.clear_report`; recorded as a `clear` call, which replays the same removals."""
        with self._lock:
            self._rec("clear", {"force": force})
            return super().clear_report(force)

    def evict(self, target_bytes: int, reason: EvictionReason = EvictionReason.WATERMARK) -> tuple[int, int]:
        """See `L1Maintenance.evict`."""
        with self._lock:
            self._rec("evict", {"target_bytes": target_bytes, "reason": reason.value})
            return super().evict(target_bytes, reason)

    def evict_over_quota(self) -> tuple[int, int]:
        """See `L1Maintenance.evict_over_quota`."""
        with self._lock:
            self._rec("evict_over_quota", {})
            return super().evict_over_quota()

    def mark_temporary(self, keys: Iterable[ObjectKey], reason: EvictionReason) -> int:
        """See `L1Maintenance.mark_temporary`."""
        keys = list(keys)
        with self._lock:
            self._rec("mark_temporary", {"keys": keys, "reason": reason.value})
            return super().mark_temporary(keys, reason)

    def reap_expired(self) -> list[ObjectKey]:
        """See `L1Maintenance.reap_expired`."""
        with self._lock:
            self._rec("reap_expired", {})
            return super().reap_expired()

    def touch(self, keys: Iterable[ObjectKey]) -> None:
        """See `L1Manager.touch`."""
        keys = list(keys)
        with self._lock:
            self._rec("touch", {"keys": keys})
            super().touch(keys)

    def retain(self, keys: Iterable[ObjectKey]) -> int:
        """See `L1Manager.retain`."""
        keys = list(keys)
        with self._lock:
            self._rec("retain", {"keys": keys})
            return super().retain(keys)


_RLOCK = type(threading.RLock())


def _held(l1: object) -> threading.RLock | None:
    lock = getattr(l1, "trace_lock", None)
    return lock if isinstance(lock, _RLOCK) else None


class TracedEvictionLoop(EvictionLoop):
    """`EvictionLoop` whose step is one record (its reaping and evictions are re-decided on replay)."""

    def __init__(self, *args: Any, tracer: TraceSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracer = tracer

    def step(self) -> EvictionResult:
        """See `EvictionLoop.step`; atomic in the trace (it holds the traced manager's lock)."""
        lock = _held(self._l1)
        if lock is None:
            return self._step()
        with lock:
            return self._step()

    def _step(self) -> EvictionResult:
        if not _INSIDE.get():
            self._tracer.record(_Q["step"], {})
        token = _INSIDE.set(True)
        try:
            return super().step()
        finally:
            _INSIDE.reset(token)


def _request_args(request: PrefetchRequest, prefix: int, l1_hits: int, l2_hits: int) -> dict[str, object]:
    return {
        "rows": [list(row) for row in request.rows],
        "object_sizes": list(request.object_sizes),
        "num_kv_readers": request.num_kv_readers,
        "outcome": {"prefix_chunks": prefix, "l1_hits": l1_hits, "l2_hits": l2_hits},
    }


class TracedPrefetchController(PrefetchController):
    """`PrefetchController` that records each lookup's prefetch once, with its outcome, when it ends."""

    def __init__(self, *args: Any, tracer: TraceSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracer = tracer

    def run_job_now(self, request: PrefetchRequest, job: PrefetchJob) -> None:
        """See `PrefetchController.run_job_now`; atomic in the trace (it holds the traced manager's lock)."""
        lock = _held(self._l1)
        if lock is None:
            self._run_now(request, job)
            return
        with lock:
            self._run_now(request, job)

    def _run_now(self, request: PrefetchRequest, job: PrefetchJob) -> None:
        token = _INSIDE.set(True)
        try:
            super().run_job_now(request, job)
        finally:
            _INSIDE.reset(token)
            if not _INSIDE.get():
                # L1 only (run_job_now refuses L2 servers): every prefix chunk is an L1 hit per row.
                hits = job.result * len(request.rows)
                self._tracer.record(_Q["run_job_now"], _request_args(request, job.result, hits, 0))

    async def prefetch(self, request: PrefetchRequest) -> PrefetchResult:
        """See `PrefetchController.prefetch`."""
        outer = not _INSIDE.get()
        token = _INSIDE.set(True)
        try:
            result = await super().prefetch(request)
        finally:
            _INSIDE.reset(token)
        if outer:
            args = _request_args(request, result.prefix_chunks, result.l1_hits, result.l2_hits)
            self._tracer.record(_Q["prefetch"], args)
        return result


class TracedStoreController(StoreController):
    """`StoreController` that records the keys each submission queued for L2, and each adapter store.

    The adapter store is recorded when it returns, with the keys it stored: from then on a lookup can
    load them, which is when the replay's simulated L2 starts serving them (a submission alone is not
    enough: the store runs later, on the storage loop).
    """

    def __init__(self, *args: Any, tracer: TraceSink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracer = tracer

    def submit(self, keys: Sequence[ObjectKey]) -> int:
        """See `StoreController.submit` (only the keys it accepted are recorded)."""
        accepted = super().submit(keys)
        if accepted and not _INSIDE.get():
            self._tracer.record(_Q["submit"], {"keys": list(keys[:accepted])})
        return accepted

    async def _one(
        self, index: int, adapter: L2Adapter, keys: list[ObjectKey], views: list[memoryview]
    ) -> list[bool]:
        results = await super()._one(index, adapter, keys, views)
        stored = [k for k, ok in zip(keys, results, strict=True) if ok]
        if stored:  # recorded before any other task runs: ahead of every lookup that could see them
            self._tracer.record(_Q["l2_store"], {"adapter": index, "keys": stored})
        return results


class TracedQuotaTable(QuotaTable):
    """`QuotaTable` that records quota changes (IsolatedLRU's limits), so a replay applies them too."""

    def __init__(self, *, tracer: TraceSink) -> None:
        super().__init__()
        self._tracer = tracer

    def set(self, salt: str, limit_bytes: int) -> None:
        """See `QuotaTable.set` (recorded once it succeeded)."""
        super().set(salt, limit_bytes)
        self._tracer.record(_Q["quota_set"], {"salt": salt, "limit_bytes": int(limit_bytes)})

    def delete(self, salt: str) -> bool:
        """See `QuotaTable.delete`."""
        removed = super().delete(salt)
        if removed:
            self._tracer.record(_Q["quota_delete"], {"salt": salt})
        return removed
