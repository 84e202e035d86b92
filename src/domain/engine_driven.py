"""Engine-driven transfers (wire-protocol.md §5.11): the client copies, the server hands out L1 slots.

With an SHM pool the client maps the whole L1 arena; `prepare_*` reserve or lock objects and answer with
their offsets, `commit_*` make them visible or release them. Without a pool the chunk bytes travel in the
message (`commit_store` data, `prepare_retrieve` data). Pending work is keyed by (instance, key identity);
unregistering an instance aborts its uncommitted writes (their bytes may be incomplete, where LMCache
would commit them) and releases its pending read locks. Answers are domain values (`PoolSlots`,
`RetrieveAnswer`); the transport turns them into the wire's slot dictionaries.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmcache.domain.cache_engine import RequestError
from lmcache.domain.events import TransferKind
from lmcache.domain.kv_layout import EngineDrivenLayout, dtype_itemsize
from lmcache.domain.workers import Worker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.cache_engine import CacheEngine, RequestKey
    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l1_memory import L1Memory

logger = logging.getLogger("lmcache.engine")


@dataclass(slots=True)
class _Pending:
    keys: list[ObjectKey]
    extents: list[Extent]


@dataclass(frozen=True, slots=True)
class PoolSlots:
    """Objects of a pool transfer: their extents in the SHM pool and, for a store, their chunk indices."""

    extents: tuple[Extent, ...] = ()
    chunk_indices: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RetrieveAnswer:
    """A `prepare_retrieve` answer: failed, chunk bytes (no pool; locks released) or pool slots (locked)."""

    ok: bool
    chunks: tuple[bytearray, ...] = ()
    slots: PoolSlots | None = None


_FAILED = RetrieveAnswer(False)


def _log_transfer(verb: str, tokens: int, seconds: float) -> None:
    """The quick start's per-request line; in this mode it times the server's part (the engine copied)."""
    logger.info("%s %d tokens in %.4f seconds", verb, tokens, seconds)


def _identity(instance_id: int, key: RequestKey) -> tuple[Any, ...]:
    return (
        instance_id,
        key.model_name,
        key.world_size,
        key.worker_id,
        tuple(key.token_ids),
        key.start,
        key.end,
        key.cache_salt,
    )


class EngineDrivenService:
    """Ops 14-19 over the cache engine.

    Args:
        engine: The cache engine (L1, sessions, workers).
        memory: The L1 arena bytes.
        pool_name: Name of the SHM pool the client maps ("" = no pool: bytes in the message).
    """

    def __init__(self, engine: CacheEngine, memory: L1Memory, pool_name: str) -> None:
        self.engine = engine
        self.memory = memory
        self.pool_name = pool_name
        self._lock = threading.Lock()
        self._stores: dict[tuple[Any, ...], _Pending] = {}
        self._reads: dict[tuple[Any, ...], _Pending] = {}

    @property
    def pool_size(self) -> int:
        """Bytes of the SHM pool (0 without one)."""
        return self.memory.size_bytes if self.pool_name else 0

    def register(
        self,
        instance_id: int,
        model_name: str,
        world_size: int,
        block_size: int,
        num_layers: int,
        hidden_dim_size: int,
        dtype_str: str,
        use_mla: bool,
        num_physical_slots: int | None,
    ) -> tuple[str, int]:
        """Register (or refresh) an engine-driven worker; returns the pool name and size."""
        workers = self.engine.workers
        if workers.get(instance_id) is None:
            slots = self.engine.chunk_size if num_physical_slots is None else num_physical_slots
            if slots <= 0 or num_layers <= 0 or hidden_dim_size <= 0 or block_size <= 0:
                raise RequestError("slots, layers, hidden size and block size must be > 0")
            dtype_itemsize(dtype_str)
            layout = EngineDrivenLayout(
                num_layers, slots, hidden_dim_size, dtype_str.removeprefix("torch."), use_mla
            )
            now = workers.now()
            workers.add(
                Worker(
                    instance_id,
                    model_name,
                    world_size,
                    "engine_driven",
                    layout,
                    None,
                    now,
                    now,
                    extra={"block_size": block_size},
                )
            )
        return self.pool_name, self.pool_size

    def unregister(self, instance_id: int) -> bool:
        """Drop the worker, abort its pending writes and release its pending read locks."""
        with self._lock:
            stores = [k for k in self._stores if k[0] == instance_id]
            reads = [k for k in self._reads if k[0] == instance_id]
            aborted = [self._stores.pop(k) for k in stores]
            released = [self._reads.pop(k) for k in reads]
        for pending in aborted:
            self.engine.l1.abort(pending.keys)
        for pending in released:
            self.engine.l1.unlock_read(pending.keys, 1)
        return self.engine.workers.remove(instance_id) is not None

    def _since(self, started: float) -> float:
        return self.engine.clock.monotonic() - started

    def _worker(self, instance_id: int) -> Worker:
        worker = self.engine.workers.get(instance_id)
        if worker is None or worker.kind != "engine_driven":
            raise RequestError(f"instance {instance_id} has no engine-driven registration")
        return worker

    def prepare_store(self, key: RequestKey, instance_id: int) -> PoolSlots | None:
        """Reserve the range's missing chunks; answer their slots (pool) or None (bytes path)."""
        worker = self._worker(instance_id)
        if not self.pool_name:
            return None
        keys, chunks = self.engine.range_keys(key, worker)
        extents = self.engine.l1.reserve(keys, worker.layout.object_bytes)
        taken = [(k, e, i) for k, e, i in zip(keys, extents, chunks, strict=True) if e is not None]
        if taken:
            ident = _identity(instance_id, key)
            with self._lock:
                old = self._stores.pop(ident, None)
                self._stores[ident] = _Pending([k for k, _, _ in taken], [e for _, e, _ in taken])
            if old is not None:
                self.engine.l1.abort(old.keys)
        return PoolSlots(tuple(e for _, e, _ in taken), tuple(i for _, _, i in taken))

    def commit_store(self, key: RequestKey, instance_id: int, chunks: Sequence[memoryview] | None) -> bool:
        """Commit the pending slots, or (with `chunks`) write the message's chunk bytes and commit them."""
        started = self.engine.clock.monotonic()
        ok, committed, size = False, 0, 0
        try:
            ok, committed, size = self._commit_store(key, instance_id, chunks)
            if committed:
                _log_transfer("Stored", committed * self.engine.chunk_size, self._since(started))
            return ok
        finally:
            self.engine.publish_transfer(TransferKind.STORE, key, committed, committed * size, started, ok)

    def _commit_store(
        self, key: RequestKey, instance_id: int, chunks: Sequence[memoryview] | None
    ) -> tuple[bool, int, int]:
        """`commit_store` minus telemetry: (ok, objects committed, bytes per object)."""
        worker = self._worker(instance_id)
        size = worker.layout.object_bytes
        if chunks is not None:
            return (*self._store_bytes(key, worker, chunks), size)
        with self._lock:
            pending = self._stores.pop(_identity(instance_id, key), None)
        if pending is None:
            return False, 0, size
        committed = [k for k, ok in zip(pending.keys, self.engine.l1.finish(pending.keys), strict=True) if ok]
        self.engine.store_controller.submit(committed)
        return len(committed) == len(pending.keys), len(committed), size

    def _store_bytes(self, key: RequestKey, worker: Worker, chunks: Sequence[memoryview]) -> tuple[bool, int]:
        keys, _ = self.engine.range_keys(key, worker)
        size = worker.layout.object_bytes
        if len(chunks) != len(keys) or any(c.nbytes != size for c in chunks):
            raise RequestError(f"expected {len(keys)} chunks of {size} bytes in commit_store data")
        extents = self.engine.l1.reserve(keys, size)
        taken = [(k, e, c) for k, e, c in zip(keys, extents, chunks, strict=True) if e is not None]
        try:
            for _, extent, chunk in taken:
                self.memory.view(extent.offset, size)[:] = chunk.cast("B")
        except Exception:
            self.engine.l1.abort([k for k, _, _ in taken])
            raise
        taken_keys = [k for k, _, _ in taken]
        committed = [k for k, ok in zip(taken_keys, self.engine.l1.finish(taken_keys), strict=True) if ok]
        self.engine.store_controller.submit(committed)
        return len(committed) == len(taken), len(committed)

    def prepare_retrieve(self, key: RequestKey, instance_id: int) -> RetrieveAnswer:
        """Check every chunk is read-locked; answer slots (locks kept) or chunk bytes (locks released)."""
        started = self.engine.clock.monotonic()
        result = _FAILED
        chunks = size = 0
        try:
            result, chunks, size = self._prepare_retrieve(key, instance_id)
            if result.ok and chunks:
                _log_transfer("Retrieved", chunks * self.engine.chunk_size, self._since(started))
            return result
        finally:
            self.engine.publish_transfer(
                TransferKind.RETRIEVE, key, chunks, chunks * size, started, result.ok
            )

    def _prepare_retrieve(self, key: RequestKey, instance_id: int) -> tuple[RetrieveAnswer, int, int]:
        """`prepare_retrieve` minus telemetry: its answer, the chunks handed out and bytes per chunk."""
        worker = self._worker(instance_id)
        size = worker.layout.object_bytes
        keys, _ = self.engine.range_keys(key, worker)
        l1 = self.engine.l1
        held = [k for k in keys if l1.readers(k) > 0]
        extents = [l1.extent(k) for k in held]
        if len(held) != len(keys) or any(e is None for e in extents):
            l1.unlock_read(held, 1)  # retired objects included: their memory waits for this release
            return _FAILED, 0, size
        ready = [e for e in extents if e is not None]
        if not self.pool_name:
            try:
                data = [bytearray(self.memory.view(e.offset, size)) for e in ready]
            finally:
                l1.unlock_read(keys, 1)
            return RetrieveAnswer(True, tuple(data)), len(keys), size
        ident = _identity(instance_id, key)
        with self._lock:
            old = self._reads.pop(ident, None)
            self._reads[ident] = _Pending(keys, ready)
        if old is not None:
            l1.unlock_read(old.keys, 1)
        return RetrieveAnswer(True, slots=PoolSlots(tuple(ready))), len(keys), size

    def commit_retrieve(self, key: RequestKey, instance_id: int) -> bool:
        """Release the locks a pool retrieve kept; True (also when the bytes already travelled)."""
        self._worker(instance_id)
        with self._lock:
            pending = self._reads.pop(_identity(instance_id, key), None)
        if pending is not None:
            self.engine.l1.unlock_read(pending.keys, 1)
        return True
