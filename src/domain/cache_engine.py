"""The cache engine: the semantics of the lmcache-driven ops (wire-protocol.md §5.1-5.7).

Ops arrive already decoded; the engine checks them against the registered layout, talks to the L1
manager and the sessions, and has the instance's `KVTransfer` copy bytes. It never raises for a client
mistake it can name: it raises `RequestError`, which the transport turns into the op's failure value.
Stores commit before they return (LMCache commits after its reply, so a lookup sent right after a store
could miss; ours cannot).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmcache.domain.events import LookupPerformed, TransferCompleted, TransferKind
from lmcache.domain.keys import ObjectKey, kv_ranks_for, pack_kv_rank
from lmcache.domain.null_events import NullEventSink
from lmcache.domain.prefetch_controller import PrefetchRequest
from lmcache.domain.session_types import LookupGrid

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_events import KVEventLog
    from lmcache.domain.l1_index import ClearReport
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.domain.prefetch_controller import PrefetchController
    from lmcache.domain.sessions import SessionManager
    from lmcache.domain.store_controller import StoreController
    from lmcache.domain.workers import Worker, WorkerRegistry
    from lmcache.ports.clock import Clock
    from lmcache.ports.events import EventSink

logger = logging.getLogger("lmcache.engine")


class RequestError(ValueError):
    """A request the engine refuses (bad range, bad block ids, wrong key); answered with the failure value."""


@dataclass(frozen=True, slots=True)
class RequestKey:
    """The fields of the wire's `IPCCacheServerKey` that the engine uses."""

    model_name: str
    world_size: int
    worker_id: int | None
    token_ids: Sequence[int]
    start: int
    end: int
    request_id: str
    cache_salt: str = ""
    num_kv_readers: int = 0
    token_content: bytes | None = None  # the token list's exact wire bytes, when the transport keeps them

    @property
    def scope(self) -> tuple[str, str]:
        """(model, cache_salt): the partition of the shared digest cache."""
        return (self.model_name, self.cache_salt)


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """`processed`: the instance was known and work was attempted (the reply carries the event handle)."""

    processed: bool
    ok: bool


class CacheEngine:
    """Lookup, store and retrieve over L1, sessions and the registered workers.

    Args:
        l1: The L1 store.
        sessions: Request sessions.
        workers: Registered workers.
        prefetch: The prefetch controller (lookups).
        store_controller: Pushes committed objects to L2.
        submit: Runs a coroutine on the storage event loop (prefetches that touch L2).
        kv_events: The KV-event log (stored records).
        null_block_id: Block id marking an unallocated engine block.
        events: Telemetry sink (lookups with their chunk hashes, finished stores and retrieves).
        clock: Times requests for the log and telemetry (default: the session manager's clock).
        store_listener: Called after a store committed chunks, before its reply, with (key, range-relative
            chunk indices committed, every key of the range); CacheBlend registers fingerprints there.
    """

    def __init__(
        self,
        l1: L1Manager,
        sessions: SessionManager,
        workers: WorkerRegistry,
        prefetch: PrefetchController,
        store_controller: StoreController,
        submit: Callable[[Coroutine[Any, Any, None]], object],
        kv_events: KVEventLog,
        null_block_id: int = 0,
        events: EventSink | None = None,
        clock: Clock | None = None,
        store_listener: Callable[[RequestKey, list[int], list[ObjectKey]], None] | None = None,
    ) -> None:
        self.l1 = l1
        self.sessions = sessions
        self.workers = workers
        self.prefetch = prefetch
        self.store_controller = store_controller
        self._submit = submit
        self.kv_events = kv_events
        self.null_block_id = null_block_id
        self.chunk_size = sessions.chunk_size
        self._events: EventSink = events if events is not None else NullEventSink()
        self.clock: Clock = clock if clock is not None else sessions.clock
        self.store_listener = store_listener

    # ------------------------------------------------------------------ lookup
    def lookup(self, key: RequestKey) -> None:
        """Start the prefetch of `key`'s full chunks for every rank; its result is polled later."""
        started = self.clock.monotonic()
        digests = self._lookup(key)
        seq_len = max(0, min(key.end, len(key.token_ids)))
        self._events.publish(
            LookupPerformed(
                key.request_id,
                key.model_name,
                self.chunk_size,
                seq_len,
                tuple(digests),
                self.clock.monotonic() - started,
            )
        )

    def _lookup(self, key: RequestKey) -> list[bytes]:
        """`lookup` minus telemetry; returns the chunk digests it computed (none without a layout)."""
        layout = self.workers.layout_for(key.model_name, key.world_size)
        if layout is None:
            self.sessions.begin_lookup(key.request_id, (), 0, LookupGrid(key.model_name, ()))
            return []
        if key.num_kv_readers < 1:
            raise RequestError("lookup needs num_kv_readers >= 1")
        grid = LookupGrid(
            key.model_name, kv_ranks_for(key.world_size, None), (0,), key.cache_salt, key.num_kv_readers
        )
        digests = self.sessions.begin_lookup(
            key.request_id, key.token_ids, min(key.end, len(key.token_ids)), grid, key.token_content
        )
        job = self.sessions.job(key.request_id)
        if not digests or job is None:
            return digests
        rows = grid.rows(digests)
        request = PrefetchRequest(rows, [layout.object_bytes] * len(rows), key.num_kv_readers)
        if self.prefetch.has_adapters:
            self._submit(self.prefetch.run_job(request, job))
        else:
            self.prefetch.run_job_now(request, job)
        return digests

    def query(self, request_id: str) -> int | None:
        """The lookup's hit count in chunks, once; None while running; 0 when unknown or consumed."""
        return self.sessions.take_prefetch_result(request_id)

    def wait(self, request_id: str, timeout_s: float) -> int | None:
        """Like `query`, blocking up to `timeout_s` for a running job (None on timeout)."""
        job = self.sessions.job(request_id)
        if job is not None and not job.wait(max(0.0, timeout_s)):
            return None
        return self.query(request_id)

    def free_lookup_locks(self, key: RequestKey) -> int:
        """Release the lookup's locks over `[start, end)` for every rank (§5.6)."""
        if key.start < key.end and key.num_kv_readers < 1:
            raise RequestError("free_lookup_locks needs num_kv_readers >= 1")
        return self.sessions.free_lookup_locks(key.request_id, key.start, key.end)

    def end_session(self, request_id: str) -> None:
        """Drop the session (LRU-touching its lookup's objects)."""
        self.sessions.end_session(request_id)

    # ------------------------------------------------------------ store / load
    def range_keys(self, key: RequestKey, worker: Worker) -> tuple[list[ObjectKey], list[int]]:
        """This worker's keys for the full chunks of `[start, end)`, and their chunk indices in the range."""
        if key.worker_id is None:
            raise RequestError("store and retrieve need a worker_id")
        size = self.chunk_size
        if key.start % size or key.start < 0 or key.end > len(key.token_ids) or key.end < key.start:
            raise RequestError(f"range [{key.start}, {key.end}) is not chunk-aligned inside the tokens")
        digests = self.sessions.hashes(
            key.request_id, key.token_ids, key.start, key.end, key.token_content, key.scope
        )
        self.sessions.attach(key.request_id, worker.instance_id)
        rank = pack_kv_rank(key.world_size, key.worker_id)
        keys = [ObjectKey(d, worker.model_name, rank, 0, key.cache_salt) for d in digests]
        return keys, list(range(len(keys)))

    def _check_blocks(self, worker: Worker, block_ids: Sequence[Sequence[int]], chunks: int) -> bool:
        layout = worker.layout
        if len(block_ids) != layout.num_block_lists:
            raise RequestError(f"{len(block_ids)} block lists for {layout.num_block_lists} engine groups")
        for group in layout.groups:
            ids = block_ids[group.block_list]
            if len(ids) < chunks * group.blocks_per_chunk:
                return False
            if ids and (min(ids) < 0 or max(ids) >= group.geometry.num_blocks):
                raise RequestError(f"block id outside 0..{group.geometry.num_blocks - 1}")
        return True

    def store(self, key: RequestKey, instance_id: int, block_ids: Sequence[Sequence[int]]) -> TransferOutcome:
        """Copy the range's new chunks into L1 and commit them; all-or-nothing on errors (§5.5)."""
        started = self.clock.monotonic()
        outcome, chunks, nbytes = TransferOutcome(False, False), 0, 0
        try:
            outcome, chunks, nbytes = self._store(key, instance_id, block_ids, started)
            return outcome
        finally:
            self.publish_transfer(TransferKind.STORE, key, chunks, nbytes, started, outcome.ok)

    def publish_transfer(
        self, kind: TransferKind, key: RequestKey, chunks: int, nbytes: int, started: float, ok: bool
    ) -> None:
        """Tell telemetry a store or retrieve of `chunks` chunks finished (`started`: a `clock` reading)."""
        duration = self.clock.monotonic() - started
        tokens = chunks * self.chunk_size
        self._events.publish(
            TransferCompleted(kind, key.request_id, key.model_name, tokens, nbytes, duration, ok)
        )

    def _store(
        self, key: RequestKey, instance_id: int, block_ids: Sequence[Sequence[int]], started: float
    ) -> tuple[TransferOutcome, int, int]:
        """`store` minus telemetry; returns the outcome, the chunks committed and their bytes."""
        worker = self.workers.get(instance_id)
        if worker is None or worker.transfer is None:
            return TransferOutcome(False, False), 0, 0
        keys, chunks = self.range_keys(key, worker)
        if not self._check_blocks(worker, block_ids, len(chunks)):
            return TransferOutcome(True, False), 0, 0
        wanted = [i for i in chunks if not self._all_null(worker, block_ids, i)]
        extents = self.l1.reserve([keys[i] for i in wanted], worker.layout.object_bytes)
        todo = [(i, e) for i, e in zip(wanted, extents, strict=True) if e is not None]
        if not todo:
            return TransferOutcome(True, True), 0, 0
        todo_keys = [keys[i] for i, _ in todo]
        try:
            worker.transfer.gather(block_ids, [i for i, _ in todo], [e for _, e in todo])
        except Exception:
            self.l1.abort(todo_keys)
            raise
        finished = self.l1.finish(todo_keys)
        committed = [k for k, ok in zip(todo_keys, finished, strict=True) if ok]
        self.store_controller.submit(committed)
        if self.store_listener is not None and committed:
            self.store_listener(key, [i for (i, _), ok in zip(todo, finished, strict=True) if ok], keys)
        if key.worker_id == 0 and committed:
            self._log_stored(key, worker.model_name, [i for i, _ in todo], keys)
        logger.info(
            "Stored %d tokens in %.4f seconds", len(todo) * self.chunk_size, self.clock.monotonic() - started
        )
        return TransferOutcome(True, True), len(committed), len(committed) * worker.layout.object_bytes

    def _all_null(self, worker: Worker, block_ids: Sequence[Sequence[int]], chunk: int) -> bool:
        for group in worker.layout.groups:
            bpc = group.blocks_per_chunk
            part = block_ids[group.block_list][chunk * bpc : (chunk + 1) * bpc]
            if part.count(self.null_block_id) != len(part):
                return False
        return True

    def _log_stored(self, key: RequestKey, model: str, chunks: list[int], keys: list[ObjectKey]) -> None:
        size, base = self.chunk_size, key.start // self.chunk_size
        parents: list[bytes | None] = []
        for i in chunks:
            if i > 0:
                parents.append(keys[i - 1].chunk_hash)
            else:
                prev = self._digests_before(key) if base else []
                parents.append(prev[0] if prev else None)
        tokens = [list(key.token_ids[(base + i) * size : (base + i + 1) * size]) for i in chunks]
        self.kv_events.stored(model, [keys[i].chunk_hash for i in chunks], parents, tokens)

    def _digests_before(self, key: RequestKey) -> list[bytes]:
        """The digest of the chunk just before the range (the parent of its first chunk)."""
        content, scope = key.token_content, key.scope
        return self.sessions.hashes(key.request_id, key.token_ids, 0, key.start, content, scope)[-1:]

    def retrieve(
        self, key: RequestKey, instance_id: int, block_ids: Sequence[Sequence[int]], skip_first_n_tokens: int
    ) -> TransferOutcome:
        """Copy the range's read-locked objects back into the engine's blocks, then release one lock each."""
        started = self.clock.monotonic()
        outcome, chunks, nbytes = TransferOutcome(False, False), 0, 0
        try:
            outcome, chunks, nbytes = self._retrieve(
                key, instance_id, block_ids, skip_first_n_tokens, started
            )
            return outcome
        finally:
            self.publish_transfer(TransferKind.RETRIEVE, key, chunks, nbytes, started, outcome.ok)

    def _retrieve(
        self,
        key: RequestKey,
        instance_id: int,
        block_ids: Sequence[Sequence[int]],
        skip_first_n_tokens: int,
        started: float,
    ) -> tuple[TransferOutcome, int, int]:
        """`retrieve` minus telemetry; returns the outcome, the chunks copied and their bytes."""
        worker = self.workers.get(instance_id)
        if worker is None or worker.transfer is None:
            if key.worker_id is not None:
                self.sessions.release_rank_once(key.request_id, pack_kv_rank(key.world_size, key.worker_id))
            return TransferOutcome(False, False), 0, 0
        keys, chunks = self.range_keys(key, worker)
        failed = TransferOutcome(True, False), 0, 0
        if not self._check_blocks(worker, block_ids, len(chunks)):
            return failed
        locked = [k for k in keys if self.l1.readers(k) > 0]
        try:
            if len(locked) != len(keys):
                return failed
            extents: list[Extent] = []
            for k in keys:
                extent = self.l1.extent(k)
                if extent is None:
                    return failed
                extents.append(extent)
            worker.transfer.scatter(block_ids, chunks, extents, max(0, skip_first_n_tokens))
        finally:
            self.l1.unlock_read(locked, 1)
        logger.info(
            "Retrieved %d tokens in %.4f seconds",
            len(keys) * self.chunk_size,
            self.clock.monotonic() - started,
        )
        return TransferOutcome(True, True), len(keys), len(keys) * worker.layout.object_bytes

    def clear(self, force: bool) -> int:
        """Clear L1 (`force`: read-locked objects too); returns the objects removed."""
        return self.l1.clear(force)

    def clear_report(self, force: bool) -> ClearReport:
        """Clear L1 and say what stayed: read-locked objects, writes in flight, retired memory."""
        return self.l1.clear_report(force)
