"""`cb_retrieve_pre_computed` (cacheblend.md §4.4): scatter matched chunks into a request's blocks.

Order of the gates, as in LMCache 0.5.6: the instance must hold a KV and a rope registration; matches
are sorted by cur_st; matches already applied to the same destination blocks for (request, worker) are
dropped (repeat guard; nothing left answers True); the allocation gate (`bound` = the fewest tokens any
engine group's block table covers) defers when every match lies beyond it (True, locks kept) and fails
when only some do (False: the client recomputes); a scatter is never partial. Then the chunks the
client did not send are released (orphans, once per lookup), every object is read under a lock (the
lookup's stashed lock, else a fresh one), the scatter port re-rotates K and writes token by token, and
one lock per object read is released.

Departure from LMCache 0.5.6 on CPU: it cannot scatter there and answers False; ours scatters and
answers True. A match whose object is not stashed takes a fresh read lock for the copy instead of
releasing a lock it does not own.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

from lmcache.domain.blend_events import BlendScattered
from lmcache.domain.cache_engine import RequestError, TransferOutcome
from lmcache.domain.keys import ObjectKey, pack_kv_rank
from lmcache.domain.null_events import NullEventSink
from lmcache.ports.blend import ScatterItem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.blend_registry import RopeRegistration, RopeRegistry
    from lmcache.domain.blend_stash import BlendStash
    from lmcache.domain.blend_types import BlendMatch
    from lmcache.domain.cache_engine import RequestKey
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.domain.workers import Worker, WorkerRegistry
    from lmcache.ports.events import EventSink

__all__ = ("MAX_MATCHES", "BlendRetriever")
logger = logging.getLogger("lmcache.blend")

MAX_MATCHES = 1 << 16
_GUARD_KEYS_PER_RANK = 4096
_Applied = tuple[bytes, int, int, tuple[int, ...]]


class BlendRetriever:
    """The scatter side of CacheBlend.

    Args:
        l1: The L1 store.
        workers: Registered workers (KV registrations).
        registry: Rope registrations.
        stash: The lookups' stashed locks.
        chunk_size: Tokens per chunk.
        events: Telemetry sink.
    """

    def __init__(
        self,
        l1: L1Manager,
        workers: WorkerRegistry,
        registry: RopeRegistry,
        stash: BlendStash,
        chunk_size: int,
        events: EventSink | None = None,
    ) -> None:
        self.l1 = l1
        self.workers = workers
        self.registry = registry
        self.stash = stash
        self.chunk_size = chunk_size
        self._events: EventSink = events if events is not None else NullEventSink()
        self._guard_lock = threading.Lock()
        self._applied: collections.OrderedDict[tuple[str, int], set[_Applied]] = collections.OrderedDict()
        self._workers_of: dict[str, set[int]] = {}  # request_id -> worker ids with guard entries

    def retrieve(
        self,
        key: RequestKey,
        matches: Sequence[BlendMatch],
        block_ids: Sequence[Sequence[int]],
        instance_id: int,
    ) -> TransferOutcome:
        """Run the gates and the scatter; see the module docstring.

        Raises:
            RequestError: No KV or rope registration, a worker-less key, malformed matches or block
                tables (answered with the failure value; nothing is written).
        """
        worker = self.workers.get(instance_id)
        reg = self.registry.get(instance_id)
        if worker is None or worker.transfer is None:
            raise RequestError(f"instance {instance_id} has no KV registration")
        if reg is None:
            raise RequestError(f"instance {instance_id} has no CB rope registration (send cb_register_rope)")
        if key.worker_id is None:
            raise RequestError("cb_retrieve_pre_computed needs a worker_id")
        self._check_matches(matches)
        rank = pack_kv_rank(key.world_size, key.worker_id)
        tables = self._tables(worker, reg, block_ids)
        ordered = sorted(matches, key=lambda m: m.cur_st)
        dests = [self._destination(m, block_ids, tables) for m in ordered]
        guard_key = (key.request_id, key.worker_id)
        todo = self._not_applied(guard_key, list(zip(ordered, dests, strict=True)))
        if matches and not todo:
            return TransferOutcome(True, True)  # every match was applied already
        bound = min(len(block_ids[g]) * tpb for g, tpb in tables)
        if any(m.cur_ed > bound for m, _ in todo):
            deferred = all(m.cur_st >= bound for m, _ in todo)
            return TransferOutcome(True, deferred)
        self.stash.release_orphans(key.request_id, [m.chunk_hash for m in matches])
        if not todo:
            return TransferOutcome(True, True)  # an empty list: the orphan release was the work
        keys = [ObjectKey(m.chunk_hash, worker.model_name, rank, 0, key.cache_salt) for m, _ in todo]
        outcome = self._scatter(key, worker, reg, [m for m, _ in todo], keys, block_ids)
        if outcome.ok:
            self._record(guard_key, key.world_size, [(m.chunk_hash, m.cur_st, m.cur_ed, d) for m, d in todo])
        return outcome

    def _check_matches(self, matches: Sequence[BlendMatch]) -> None:
        cs = self.chunk_size
        if len(matches) > MAX_MATCHES:
            raise RequestError(f"{len(matches)} matches (at most {MAX_MATCHES})")
        for m in matches:
            if m.old_st < 0 or m.cur_st < 0 or m.old_ed != m.old_st + cs or m.cur_ed != m.cur_st + cs:
                raise RequestError(
                    f"match {m.old_st}-{m.old_ed} -> {m.cur_st}-{m.cur_ed} is not one {cs}-token chunk"
                )
            if not 0 < len(m.chunk_hash) <= 64:
                raise RequestError("match hash must be 1 to 64 bytes")

    def _tables(
        self, worker: Worker, reg: RopeRegistration, block_ids: Sequence[Sequence[int]]
    ) -> list[tuple[int, int]]:
        """(engine group, tokens per block) of each kernel group; checks the block tables cover them."""
        out = []
        for group, rot in zip(worker.layout.groups, reg.plan.groups, strict=True):
            if rot.unsupported:
                raise RequestError(rot.unsupported)
            if rot.engine_group >= len(block_ids):
                raise RequestError(f"no block table for engine group {rot.engine_group}")
            out.append((rot.engine_group, self.chunk_size // group.blocks_per_chunk))
        return out

    @staticmethod
    def _destination(
        m: BlendMatch, block_ids: Sequence[Sequence[int]], tables: list[tuple[int, int]]
    ) -> tuple[int, ...]:
        """The blocks a match writes into (a grown table keeps a match applied; a new block re-scatters)."""
        out: list[int] = []
        for g, tpb in tables:
            out.extend(block_ids[g][m.cur_st // tpb : (m.cur_ed - 1) // tpb + 1])
        return tuple(out)

    def _not_applied(
        self, guard_key: tuple[str, int], todo: list[tuple[BlendMatch, tuple[int, ...]]]
    ) -> list[tuple[BlendMatch, tuple[int, ...]]]:
        with self._guard_lock:
            applied = self._applied.get(guard_key)
            if applied is None:
                return todo
            self._applied.move_to_end(guard_key)
            return [(m, d) for m, d in todo if (m.chunk_hash, m.cur_st, m.cur_ed, d) not in applied]

    def _record(self, guard_key: tuple[str, int], world_size: int, entries: list[_Applied]) -> None:
        with self._guard_lock:
            self._applied.setdefault(guard_key, set()).update(entries)
            self._applied.move_to_end(guard_key)
            self._workers_of.setdefault(guard_key[0], set()).add(guard_key[1])
            while len(self._applied) > _GUARD_KEYS_PER_RANK * max(1, world_size):
                (rid, worker), _ = self._applied.popitem(last=False)
                self._drop_worker(rid, worker)

    def _drop_worker(self, request_id: str, worker_id: int) -> None:
        workers = self._workers_of.get(request_id)
        if workers is not None:
            workers.discard(worker_id)
            if not workers:
                del self._workers_of[request_id]

    def forget(self, request_id: str) -> None:
        """Drop the repeat guard's entries of a finished request (end_session)."""
        with self._guard_lock:
            for worker_id in self._workers_of.pop(request_id, ()):
                self._applied.pop((request_id, worker_id), None)

    def _scatter(
        self,
        key: RequestKey,
        worker: Worker,
        reg: RopeRegistration,
        todo: list[BlendMatch],
        keys: list[ObjectKey],
        block_ids: Sequence[Sequence[int]],
    ) -> TransferOutcome:
        """Lock every object, check, scatter, release one lock per object read."""
        held = self.stash.consume(key.request_id, keys)
        fresh = [k for k, ok in zip(keys, held, strict=True) if not ok]
        got = self.l1.lock_read(fresh, 1) if fresh else []
        locked = [k for k, ok in zip(keys, held, strict=True) if ok] + [
            k for k, ok in zip(fresh, got, strict=True) if ok
        ]
        started = self.workers.now()
        stats = None
        try:
            if not all(got):
                return TransferOutcome(True, False)
            items = []
            for m, k in zip(todo, keys, strict=True):
                extent = self.l1.extent(k)
                if extent is None:
                    return TransferOutcome(True, False)
                items.append(ScatterItem(extent, m.old_st, m.cur_st))
            try:
                reg.scatter.check(items, block_ids)
            except ValueError as exc:
                raise RequestError(str(exc)) from exc
            try:
                stats = reg.scatter.scatter(items, block_ids)
            except Exception:
                logger.exception("CacheBlend scatter for %s failed", key.request_id)
                return TransferOutcome(True, False)
        finally:
            self.l1.unlock_read(locked, 1)
            self._events.publish(
                BlendScattered(
                    worker.model_name,
                    len(todo) if stats is not None else 0,
                    stats.bytes_written if stats is not None else 0,
                    stats.bytes_rotated if stats is not None else 0,
                    self.workers.now() - started,
                    stats is not None,
                )
            )
        logger.info(
            "CacheBlend scattered %d chunks (%d tokens) in %.4f seconds",
            len(todo),
            len(todo) * self.chunk_size,
            self.workers.now() - started,
        )
        return TransferOutcome(True, True)
