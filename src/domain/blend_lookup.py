"""`cb_unified_lookup` (cacheblend.md §3.4, §5, §7): a submit-once, poll-on-recall job per request_id.

The first call starts the prefix leg (the ordinary lookup prefetch, with its locks and session
bookkeeping; under `--enable-segmented-prefix` a sparse prefetch of the whole prompt instead) and the
candidate search (the local fingerprint index, or the coordinator's directory with a deadline). Later
calls with the same request_id continue that job and ignore their own key. The job answers None while
something is loading, then: the prefix filter, one sparse prefetch of the candidates' unique hashes
(every rank), classification (found / partial / stale with strikes), overlap resolution and the stash of
the found chunks' locks for the retrieve; then it is deleted.

Departure from LMCache 0.5.6 (§7 "Decided"): when the coordinator times out or fails, the local matches
are used instead of none. Jobs are bounded (`max_jobs`) and expire with their session's TTL.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmcache.domain.blend_events import BlendLookupFinished
from lmcache.domain.blend_reconcile import (
    after_prefix,
    classify,
    drop_segmented,
    resolve_overlaps,
    unique_hashes,
)
from lmcache.domain.blend_segmented import SegmentedLeg
from lmcache.domain.blend_types import BlendMatch, BlendScope, UnifiedLookupResult
from lmcache.domain.cache_engine import RequestError
from lmcache.domain.keys import ObjectKey, kv_ranks_for
from lmcache.domain.null_events import NullEventSink

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from lmcache.domain.blend_events import MatchSource
    from lmcache.domain.blend_index import FingerprintIndex
    from lmcache.domain.blend_prefetch import SparsePrefetcher, SparseResult
    from lmcache.domain.blend_stash import BlendStash
    from lmcache.domain.cache_engine import CacheEngine, RequestKey
    from lmcache.ports.blend import FleetMatch, FleetMatcher
    from lmcache.ports.clock import Clock
    from lmcache.ports.events import EventSink

__all__ = ("BlendLookupService",)
logger = logging.getLogger("lmcache.blend")


@dataclass(slots=True)
class _Job:
    key: RequestKey
    scope: BlendScope
    created: float
    started: float
    object_bytes: int | None
    segmented: SegmentedLeg | None = None
    local: list[BlendMatch] | None = None
    fleet: Future[list[FleetMatch]] | None = None
    fleet_deadline: float = 0.0
    source: MatchSource = "none"
    prefix_chunks: int | None = None
    candidates: list[BlendMatch] | None = None
    hashes: list[bytes] = field(default_factory=list)
    keys: list[list[ObjectKey]] = field(default_factory=list)
    sparse: Future[SparseResult] | None = None
    result: UnifiedLookupResult | None = None
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class BlendLookupService:
    """The CacheBlend lookup jobs of one server.

    Args:
        engine: The cache engine (its lookup is the prefix leg; sessions, workers, L1).
        index: The local fingerprint index.
        prefetcher: Sparse prefetches (candidates, segmented prefix).
        stash: Where found chunks' locks wait for the retrieve.
        clock: Time source (deadlines, expiry).
        submit: Runs a coroutine on the storage loop (prefetches that touch L2).
        fleet: The coordinator's directory; None matches locally.
        segmented_prefix: `--enable-segmented-prefix`.
        events: Telemetry sink.
        max_jobs: Lookups in flight at most; more are refused (the failure value: no blend hits).
    """

    def __init__(
        self,
        engine: CacheEngine,
        index: FingerprintIndex,
        prefetcher: SparsePrefetcher,
        stash: BlendStash,
        clock: Clock,
        *,
        submit: Callable[[Coroutine[Any, Any, Any]], Future[Any]],
        fleet: FleetMatcher | None = None,
        segmented_prefix: bool = False,
        events: EventSink | None = None,
        max_jobs: int = 65536,
    ) -> None:
        self.engine = engine
        self.index = index
        self.prefetcher = prefetcher
        self.stash = stash
        self.clock = clock
        self._submit = submit
        self.fleet = fleet
        self.segmented_prefix = segmented_prefix
        self._events: EventSink = events if events is not None else NullEventSink()
        self.max_jobs = max_jobs
        self.chunk_size = engine.chunk_size
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self.fleet_fallbacks = 0

    @property
    def active(self) -> int:
        """Lookups started and not yet answered (`active_cb_lookups`)."""
        return len(self._jobs)

    # --------------------------------------------------------------- the op
    def lookup(self, key: RequestKey) -> UnifiedLookupResult | None:
        """Start or continue the request's job; None while it is still loading."""
        rid = key.request_id
        with self._lock:
            job = self._jobs.get(rid)
            if job is None:
                if len(self._jobs) >= self.max_jobs:
                    raise RequestError(f"{len(self._jobs)} CacheBlend lookups in flight; refusing more")
                job = self._jobs[rid] = self._placeholder(key)
                fresh = True
            else:
                fresh = False
        try:
            with job.lock:
                if fresh:
                    self._start(job)
                    job.running = True
                elif not job.running:  # a concurrent first call failed to start it
                    raise RequestError(f"the CacheBlend lookup of {rid} failed to start")
                result = self._advance(job)
        except BaseException:
            self._forget(rid, job)
            raise
        if result is not None:
            self._forget(rid, job)
        return result

    def _placeholder(self, key: RequestKey) -> _Job:
        layout = self.engine.workers.layout_for(key.model_name, key.world_size)
        now = self.clock.monotonic()
        scope = BlendScope(key.model_name, key.world_size, key.cache_salt)
        object_bytes = None if layout is None else int(layout.object_bytes)
        return _Job(key, scope, now, self.clock.monotonic(), object_bytes)

    def _forget(self, rid: str, job: _Job) -> None:
        with self._lock:
            if self._jobs.get(rid) is job:
                del self._jobs[rid]

    def _start(self, job: _Job) -> None:
        key = job.key
        if job.object_bytes is not None and key.num_kv_readers < 1:
            raise RequestError("cb_unified_lookup needs num_kv_readers >= 1")
        if job.object_bytes is not None and self.segmented_prefix and not self._recurrent(key):
            job.segmented = SegmentedLeg.start(self.engine, self._run_sparse, key, job.object_bytes)
        else:
            self.engine.lookup(key)
        if job.object_bytes is None:
            job.local = []
        elif self.fleet is not None and len(key.token_ids) >= self.chunk_size:
            job.fleet = self.fleet.match(job.scope, key.token_ids)
            job.fleet_deadline = job.created + self.fleet.timeout_s
        else:
            job.local = self.index.match(job.scope, key.token_ids)
            job.source = "local"

    def _recurrent(self, key: RequestKey) -> bool:
        """Segmented prefix is forced off for registrations with recurrent (Mamba) groups."""
        return any(
            w.extra.get("recurrent_groups")
            for w in self.engine.workers.workers()
            if w.model_name == key.model_name and w.world_size == key.world_size
        )

    def _run_sparse(
        self, keys: Sequence[ObjectKey], sizes: Sequence[int], readers: int
    ) -> Future[SparseResult]:
        if self.prefetcher.has_adapters:
            future: Future[SparseResult] = self._submit(self.prefetcher.run(keys, sizes, readers))
            return future
        return _done(self.prefetcher.run_now(keys, readers))

    # ------------------------------------------------------------- progress
    def _advance(self, job: _Job) -> UnifiedLookupResult | None:
        if job.result is not None:
            return job.result
        if job.prefix_chunks is None and not self._prefix_done(job):
            return None
        if job.candidates is None:
            candidates = self._candidates(job)
            if candidates is None:
                return None
            retained = job.segmented.retained if job.segmented is not None else ()
            prefix_tokens = (job.prefix_chunks or 0) * self.chunk_size
            candidates = after_prefix(drop_segmented(candidates, retained, self.chunk_size), prefix_tokens)
            job.candidates = candidates
            if candidates and job.object_bytes is not None:
                self._start_sparse(job)
        if job.sparse is not None and not job.sparse.done():
            return None
        job.result = self._finish(job)
        return job.result

    def _prefix_done(self, job: _Job) -> bool:
        rid = job.key.request_id
        if job.segmented is not None:
            hit = job.segmented.poll(self.engine)
        else:
            hit = self.engine.sessions.take_prefetch_result(rid)
        if hit is None:
            return False
        job.prefix_chunks = hit
        return True

    def _candidates(self, job: _Job) -> list[BlendMatch] | None:
        if job.local is not None:
            return job.local
        assert job.fleet is not None
        if job.fleet.done():
            try:
                job.local = self._from_fleet(job, job.fleet.result())
                job.source = "fleet"
                return job.local
            except Exception as exc:
                logger.warning("Coordinator blend match failed (%r); matching locally", exc)
        elif self.clock.monotonic() < job.fleet_deadline:
            return None
        else:
            job.fleet.cancel()
            logger.warning("Coordinator blend match timed out; matching locally")
        self.fleet_fallbacks += 1
        job.local = self.index.match(job.scope, job.key.token_ids)
        job.source = "fleet_fallback"
        return job.local

    def _from_fleet(self, job: _Job, found: Sequence[FleetMatch]) -> list[BlendMatch]:
        """Turn coordinator matches into candidates, dropping any that do not fit the prompt."""
        cs, n = self.chunk_size, len(job.key.token_ids)
        out: dict[bytes, BlendMatch] = {}
        for m in found:
            if m.old_st < 0 or m.cur_st < 0 or m.cur_st + cs > n or not m.chunk_hash:
                continue
            out.setdefault(m.chunk_hash, BlendMatch.at(m.old_st, m.cur_st, cs, m.chunk_hash))
        return sorted(out.values(), key=lambda m: m.cur_st)

    def _start_sparse(self, job: _Job) -> None:
        key = job.key
        ranks = kv_ranks_for(key.world_size, None)
        job.hashes = unique_hashes(job.candidates or [])
        job.keys = [[ObjectKey(h, key.model_name, r, 0, key.cache_salt) for r in ranks] for h in job.hashes]
        flat = [k for keys in job.keys for k in keys]
        assert job.object_bytes is not None
        job.sparse = self._run_sparse(flat, [job.object_bytes] * len(flat), key.num_kv_readers)

    def _finish(self, job: _Job) -> UnifiedLookupResult:
        key, cs = job.key, self.chunk_size
        prefix_tokens = (job.prefix_chunks or 0) * cs
        segmented = job.segmented.matches if job.segmented is not None else ()
        per_hash: dict[bytes, list[ObjectKey]] = (
            dict(job.segmented.stashed) if job.segmented is not None else {}
        )
        kept: list[BlendMatch] = []
        found = partial = stale = 0
        if job.sparse is not None:
            try:
                outcome = job.sparse.result()
            except Exception as exc:
                logger.warning("Blend sparse prefetch failed: %r", exc)
                outcome = None
            if outcome is not None:
                width = len(job.keys[0]) if job.keys else 0
                locked = [outcome.locked[i * width : (i + 1) * width] for i in range(len(job.hashes))]
                there = [outcome.available[i * width : (i + 1) * width] for i in range(len(job.hashes))]
                verdict = classify(job.hashes, locked, there)
                drop = [
                    k
                    for h, keys, got in zip(job.hashes, job.keys, locked, strict=True)
                    if h not in verdict.found
                    for k, ok in zip(keys, got, strict=True)
                    if ok
                ]
                self.engine.l1.unlock_read(drop, key.num_kv_readers)
                self.index.found(job.scope, verdict.found)
                self.index.strike(job.scope, verdict.stale)
                for h, keys in zip(job.hashes, job.keys, strict=True):
                    if h in verdict.found:
                        per_hash.setdefault(h, []).extend(keys)
                matches = [m for m in job.candidates or [] if m.chunk_hash in verdict.found]
                kept = resolve_overlaps(matches, prefix_tokens)
                found, partial, stale = len(verdict.found), len(verdict.partial), len(verdict.stale)
        if per_hash:
            self.stash.put(key.request_id, per_hash, key.num_kv_readers, self.clock.monotonic())
        elif job.object_bytes is not None:
            self.stash.release(key.request_id)  # a repeated lookup drops the previous stash
        self._events.publish(
            BlendLookupFinished(
                key.model_name,
                job.source,
                len(job.candidates or ()),
                found,
                partial,
                stale,
                len(kept),
                len(segmented),
                prefix_tokens,
                self.clock.monotonic() - job.started,
            )
        )
        return UnifiedLookupResult(prefix_tokens, tuple(kept), tuple(segmented))

    # --------------------------------------------------------------- upkeep
    def end_session(self, request_id: str) -> int:
        """Drop the request's job and release its stashed locks; returns locks released now."""
        with self._lock:
            job = self._jobs.pop(request_id, None)
        if job is not None:
            self._abandon(job)
        return self.stash.release(request_id)

    def expire(self, ttl_s: float) -> list[str]:
        """Drop jobs and stashes older than `ttl_s` (their sessions expired); returns the request ids."""
        cutoff = self.clock.monotonic() - ttl_s
        with self._lock:
            old = [rid for rid, job in self._jobs.items() if job.created <= cutoff]
            jobs = [self._jobs.pop(rid) for rid in old]
        for job in jobs:
            self._abandon(job)
        return old + self.stash.expire(cutoff)

    def _abandon(self, job: _Job) -> None:
        """Release what an unanswered job locked (now, or when its prefetch finishes)."""
        if job.fleet is not None:
            job.fleet.cancel()
        readers = job.key.num_kv_readers
        if job.sparse is not None and job.result is None:
            keys = [k for ks in job.keys for k in ks]

            def release(future: Future[SparseResult]) -> None:
                if not future.cancelled() and future.exception() is None:
                    got = future.result().locked
                    self.engine.l1.unlock_read([k for k, ok in zip(keys, got, strict=True) if ok], readers)

            job.sparse.add_done_callback(release)
        if job.segmented is not None and job.prefix_chunks is None:
            job.segmented.abandon(self.engine.l1, readers)
