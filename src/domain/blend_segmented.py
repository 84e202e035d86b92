"""The segmented prefix leg of `cb_unified_lookup` (`--enable-segmented-prefix`, cacheblend.md §5).

Instead of the ordinary lookup prefetch, which keeps only the leading run of chunks, the whole prompt is
prefetched key by key. The leading run becomes `prefix_coverage_tokens` (with the ordinary session and
`free_lookup_locks` bookkeeping); every later chunk that loaded for every rank stays L1-resident and
read-locked, is reported in `segmented_prefix_segments` at its own position (`old_st == cur_st`, the
request's own chunk hash) and joins the stash for `cb_retrieve_pre_computed`; so only the gap is
recomputed. Chunks that loaded for some ranks only are released.

0.5.6 returns an empty list in the case that was tested live (it trims at the gap); this is the
behaviour the spec describes ("Decided", §5), inferred from the spec text.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmcache.domain.blend_prefetch import SparseResult
from lmcache.domain.blend_types import BlendMatch
from lmcache.domain.keys import ObjectKey, kv_ranks_for
from lmcache.domain.session_types import LookupGrid

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.domain.cache_engine import CacheEngine, RequestKey
    from lmcache.domain.l1_manager import L1Manager

__all__ = ("SegmentedLeg",)


@dataclass(slots=True)
class SegmentedLeg:
    """One request's segmented prefix leg; `poll` settles it once the prefetch is done."""

    key: RequestKey
    chunk_size: int
    digests: list[bytes]
    width: int
    keys: list[ObjectKey]
    future: Future[SparseResult]
    retained: frozenset[int] = frozenset()
    matches: tuple[BlendMatch, ...] = ()
    stashed: dict[bytes, list[ObjectKey]] = field(default_factory=dict)
    prefix: int = 0
    settled: bool = False

    @classmethod
    def start(
        cls,
        engine: CacheEngine,
        run_sparse: Callable[[Sequence[ObjectKey], Sequence[int], int], Future[SparseResult]],
        key: RequestKey,
        object_bytes: int,
    ) -> SegmentedLeg:
        """Open the session's lookup and prefetch every key of the prompt's full chunks (all ranks)."""
        ranks = kv_ranks_for(key.world_size, None)
        grid = LookupGrid(key.model_name, ranks, (0,), key.cache_salt, key.num_kv_readers)
        end = min(key.end, len(key.token_ids))
        digests = engine.sessions.begin_lookup(key.request_id, key.token_ids, end, grid)
        keys = [ObjectKey(d, key.model_name, r, 0, key.cache_salt) for d in digests for r in ranks]
        if keys:
            future = run_sparse(keys, [object_bytes] * len(keys), key.num_kv_readers)
        else:
            future = Future()
            future.set_result(SparseResult([], []))
        return cls(key, engine.chunk_size, digests, len(ranks), keys, future)

    def poll(self, engine: CacheEngine) -> int | None:
        """The leading run in chunks once the prefetch is done (None before); settles the locks once.

        The run is handed to the session like an ordinary lookup's result, so `free_lookup_locks` and
        `retrieve` release the prefix locks as usual.
        """
        if not self.future.done():
            return None
        if not self.settled:
            self._settle(engine)
        if engine.sessions.job(self.key.request_id) is not None:
            hit = engine.sessions.take_prefetch_result(self.key.request_id)
            return self.prefix if hit is None else hit
        return self.prefix

    def _settle(self, engine: CacheEngine) -> None:
        self.settled = True
        try:
            outcome = self.future.result()
        except Exception:
            outcome = SparseResult([False] * len(self.keys), [False] * len(self.keys))
        width, cs = self.width, self.chunk_size
        columns = len(self.digests)
        complete = [all(outcome.locked[c * width : (c + 1) * width]) for c in range(columns)]
        prefix = next((c for c, ok in enumerate(complete) if not ok), columns)
        retained = [c for c in range(prefix + 1, columns) if complete[c]]
        release = [
            k
            for c in range(prefix, columns)
            if not complete[c]
            for k, ok in zip(
                self.keys[c * width : (c + 1) * width],
                outcome.locked[c * width : (c + 1) * width],
                strict=True,
            )
            if ok
        ]
        if release:
            engine.l1.unlock_read(release, self.key.num_kv_readers)
        self.retained = frozenset(retained)
        self.matches = tuple(BlendMatch.at(c * cs, c * cs, cs, self.digests[c]) for c in retained)
        self.stashed = {self.digests[c]: self.keys[c * width : (c + 1) * width] for c in retained}
        self.prefix = prefix
        job = engine.sessions.job(self.key.request_id)
        if job is not None:
            job.set_result(prefix)

    def abandon(self, l1: L1Manager, readers: int) -> None:
        """Release every lock the prefetch took (the job was dropped before it answered)."""

        def release(future: Future[SparseResult]) -> None:
            if not future.cancelled() and future.exception() is None and not self.settled:
                self.settled = True
                l1.unlock_read(
                    [k for k, ok in zip(self.keys, future.result().locked, strict=True) if ok], readers
                )

        self.future.add_done_callback(release)
