"""Prefetch controller: answers a lookup over ranks x object groups x chunks from L1 and the L2 cascade.

Steps: read-lock every L1 hit; ask every adapter (lookup-and-lock, concurrently, under a deadline) about
the rest; plan the leading run of columns where each row's object is in L1 or in some adapter; load each
missing object of that run from the lowest-index adapter holding it into a fresh L1 extent (at most
`max_in_flight` loads at once, each under the deadline); then keep `num_kv_readers` locks on the longest
prefix present in every row and release everything past it, in L1 and in L2. An adapter that raises or
misses its deadline counts as a miss, so a slow tier never stalls L1 hits. `default` admits loaded objects
as temporary (they leave L1 after their readers); `retain` keeps them as normal objects.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from lmcache.domain.events import L2Loaded, PrefetchCompleted
from lmcache.domain.null_events import NullEventSink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.domain.session_types import PrefetchJob
    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory
    from lmcache.ports.l2_adapter import L2Adapter

PrefetchPolicy = Literal["default", "retain"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrefetchRequest:
    """A lookup grid: `rows[r][c]` is the key of chunk c in row r (one row per object group x rank).

    Attributes:
        rows: Equal-length rows of keys.
        object_sizes: Bytes of one object, per row (the registered layout of that group).
        num_kv_readers: Read locks to keep on every object of the prefix.
    """

    rows: Sequence[Sequence[ObjectKey]]
    object_sizes: Sequence[int]
    num_kv_readers: int = 1


@dataclass(frozen=True, slots=True)
class PrefetchResult:
    """Outcome: the common prefix (chunks) and where its objects came from."""

    prefix_chunks: int
    l1_hits: int
    l2_hits: int
    l2_errors: int


@dataclass(slots=True)
class _Plan:
    keys: list[ObjectKey]  # flattened column-major: index = col * nrows + row
    nrows: int
    l1: list[bool]
    source: list[int]  # adapter index per key, -1 = nowhere
    l2_locked: list[list[bool]] = field(default_factory=list)
    asked: list[ObjectKey] = field(default_factory=list)
    errors: int = 0

    def col(self, index: int) -> int:
        return index // self.nrows


class PrefetchController:
    """Runs prefetches on the storage event loop.

    Args:
        l1: The L1 store.
        memory: The arena bytes (load targets).
        adapters: The L2 cascade, in order (lower index wins).
        policy: `default` (temporary objects) or `retain`.
        max_in_flight: Concurrent L2 loads at most (`--l2-prefetch-max-in-flight`).
        deadline_s: Per adapter call (lookup or load); past it the call is cancelled and counts as a miss.
        events: Telemetry sink.
    """

    def __init__(
        self,
        l1: L1Manager,
        memory: L1Memory,
        adapters: Sequence[L2Adapter],
        *,
        policy: PrefetchPolicy = "default",
        max_in_flight: int = 8,
        deadline_s: float = 5.0,
        events: EventSink | None = None,
    ) -> None:
        if policy not in get_args(PrefetchPolicy):
            raise ValueError(f"unknown L2 prefetch policy {policy!r}")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._l1 = l1
        self._memory = memory
        self._adapters = list(adapters)
        self.policy: PrefetchPolicy = policy
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_s
        self._events: EventSink = events if events is not None else NullEventSink()

    async def run_job(self, request: PrefetchRequest, job: PrefetchJob) -> None:
        """Prefetch and publish the prefix into `job`; an unexpected error reads as 0 hits."""
        try:
            result = await self.prefetch(request)
        except Exception:
            logger.exception("Prefetch failed; reporting 0 hits")
            job.set_result(0)
            raise
        job.set_result(result.prefix_chunks)

    @property
    def has_adapters(self) -> bool:
        """Whether any L2 tier is configured (without one a prefetch only locks L1 hits)."""
        return bool(self._adapters)

    def run_job_now(self, request: PrefetchRequest, job: PrefetchJob) -> None:
        """Run a prefetch on the calling thread; only valid without adapters, where it never suspends.

        Saves the hop to the storage loop on L1-only servers, so the lookup's result is ready when its
        reply leaves (the first status poll then already reads the hit count).
        """
        if self._adapters:
            raise RuntimeError("run_job_now needs a server without L2 adapters")
        try:
            plan = self._begin(request)
            result = self._finish(plan, request, self._first_gap(plan, len(request.rows[0])), [])
        except Exception:
            logger.exception("Prefetch failed; reporting 0 hits")
            job.set_result(0)
            raise
        job.set_result(result.prefix_chunks)

    async def prefetch(self, request: PrefetchRequest) -> PrefetchResult:
        """Lock and load the longest prefix present in every row; see the module docstring."""
        plan = self._begin(request)
        ncols = len(plan.keys) // plan.nrows if plan.nrows else 0
        missing = [i for i, hit in enumerate(plan.l1) if not hit]
        loaded: list[int] = []
        if missing and self._adapters:
            await self._ask_adapters(plan, missing)
        prefix = self._first_gap(plan, ncols)
        try:
            if any(plan.source[i] >= 0 and plan.col(i) < prefix for i in missing):
                prefix, loaded = await self._load(plan, request, prefix)
        finally:
            await self._release_l2(plan)
        return self._finish(plan, request, prefix, loaded)

    def _begin(self, request: PrefetchRequest) -> _Plan:
        """Validate the grid, flatten it column-major and read-lock its L1 hits."""
        nrows = len(request.rows)
        ncols = len(request.rows[0]) if nrows else 0
        if any(len(row) != ncols for row in request.rows) or len(request.object_sizes) != nrows:
            raise ValueError("prefetch rows must have equal lengths and one object size each")
        if nrows == 1:
            keys = list(request.rows[0])
        else:
            keys = [request.rows[r][c] for c in range(ncols) for r in range(nrows)]
        return _Plan(keys, nrows, self._l1.lock_read(keys, request.num_kv_readers), [-1] * len(keys))

    @staticmethod
    def _first_gap(plan: _Plan, ncols: int) -> int:
        """The first column with an object in no tier (`ncols` when there is none)."""
        for i, (hit, source) in enumerate(zip(plan.l1, plan.source, strict=True)):
            if not hit and source < 0:
                return plan.col(i)
        return ncols

    def _finish(
        self, plan: _Plan, request: PrefetchRequest, prefix: int, loaded: list[int]
    ) -> PrefetchResult:
        """Release the locks past `prefix` (L1 hits and loaded objects), publish and return the result."""
        nrows, keys = plan.nrows, plan.keys
        loaded_set = set(loaded)
        past = [keys[i] for i in range(prefix * nrows, len(keys)) if plan.l1[i] or i in loaded_set]
        if past:
            self._l1.unlock_read(past, request.num_kv_readers)
        l1_hits = sum(plan.l1[: prefix * nrows])
        result = PrefetchResult(prefix, l1_hits, prefix * nrows - l1_hits, plan.errors)
        ncols = len(keys) // nrows if nrows else 0
        self._events.publish(PrefetchCompleted(ncols, prefix, result.l1_hits, result.l2_hits, plan.errors))
        return result

    async def _ask_adapters(self, plan: _Plan, missing: list[int]) -> None:
        asked = [plan.keys[i] for i in missing]
        answers = await asyncio.gather(*(self._lookup(a, asked) for a in self._adapters))
        for index, answer in enumerate(answers):
            if answer is None:
                plan.errors += 1
                answer = [False] * len(asked)
            plan.l2_locked.append(answer)
            for j, i in enumerate(missing):
                if answer[j] and plan.source[i] < 0:
                    plan.source[i] = index
        plan.asked = asked

    async def _lookup(self, adapter: L2Adapter, keys: list[ObjectKey]) -> list[bool] | None:
        try:
            answer = await asyncio.wait_for(adapter.lookup_and_lock(keys), self.deadline_s)
        except Exception as exc:
            logger.warning("L2 lookup failed or timed out: %r", exc)
            return None
        return answer if len(answer) == len(keys) else None

    async def _release_l2(self, plan: _Plan) -> None:
        for adapter, locked in zip(self._adapters, plan.l2_locked, strict=False):
            held = [k for k, ok in zip(plan.asked, locked, strict=True) if ok]
            if held:
                try:
                    await asyncio.wait_for(adapter.unlock(held), self.deadline_s)
                except Exception as exc:
                    logger.warning("L2 unlock failed: %r", exc)

    async def _load(self, plan: _Plan, request: PrefetchRequest, prefix: int) -> tuple[int, list[int]]:
        """Load the missing objects of columns < prefix; returns the (possibly shorter) prefix and loads."""
        wanted = [i for i, hit in enumerate(plan.l1) if not hit and plan.col(i) < prefix]
        sizes = [request.object_sizes[i % plan.nrows] for i in wanted]
        extents = self._l1.reserve([plan.keys[i] for i in wanted], sizes)
        for i, extent in zip(wanted, extents, strict=True):
            if extent is None:  # no room, or someone else is writing it: a miss from here on
                prefix = min(prefix, plan.col(i))
        jobs = [(i, e) for i, e in zip(wanted, extents, strict=True) if e is not None]
        late = [plan.keys[i] for i, _ in jobs if plan.col(i) >= prefix]
        self._l1.abort(late)
        jobs = [(i, e) for i, e in jobs if plan.col(i) < prefix]
        gate = asyncio.Semaphore(self.max_in_flight)
        oks = await asyncio.gather(*(self._load_one(gate, plan, i, e) for i, e in jobs))
        good = [i for (i, _), ok in zip(jobs, oks, strict=True) if ok]
        bad = [i for (i, _), ok in zip(jobs, oks, strict=True) if not ok]
        self._l1.abort(plan.keys[i] for i in bad)
        prefix = min([prefix, *(plan.col(i) for i in bad)])
        committed = self._l1.finish(
            (plan.keys[i] for i in good), request.num_kv_readers, temporary=self.policy == "default"
        )
        loaded = [i for i, ok in zip(good, committed, strict=True) if ok]
        for i, ok in zip(good, committed, strict=True):
            if not ok:  # the reservation expired during the load
                prefix = min(prefix, plan.col(i))
        return prefix, loaded

    async def _load_one(self, gate: asyncio.Semaphore, plan: _Plan, i: int, extent: Extent) -> bool:
        source = plan.source[i]
        key = plan.keys[i]
        async with gate:
            try:
                view = self._memory.view(extent.offset, extent.size)
                result = await asyncio.wait_for(self._adapters[source].load([key], [view]), self.deadline_s)
                ok = len(result) == 1 and bool(result[0])
            except Exception as exc:
                logger.warning("L2 adapter #%d load of %s failed: %r", source, key.short(), exc)
                plan.errors += 1
                ok = False
        self._events.publish(L2Loaded(source, key, ok, extent.size if ok else 0))
        return ok
