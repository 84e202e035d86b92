"""A cache server in miniature for the CacheEngine and EngineDrivenService unit tests.

The real domain objects (L1Manager, SessionManager, WorkerRegistry, PrefetchController, StoreController,
KVEventLog) over fake ports: FakeClock, RecordingEventSink, FakeL1Memory, FakeKVTransfer, FakeL2Adapter.
The KV-event log hears the storage events through a FanoutEventSink, as in the server. Coroutines the
engine submits to the storage loop wait in `loop` until a test runs them, so "still prefetching" is a
state a test can see.
"""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.cache_engine import CacheEngine, RequestKey
from lmcache.domain.digest_cache import DigestCache
from lmcache.domain.event_fanout import FanoutEventSink
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.keys import ObjectKey, pack_kv_rank
from lmcache.domain.kv_events import KVEventLog
from lmcache.domain.kv_layout import TensorSpec, build_layout
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController
from lmcache.domain.sessions import SessionManager
from lmcache.domain.store_controller import StoreController
from lmcache.domain.workers import Worker, WorkerRegistry
from tests.fakes.clock import FakeClock
from tests.fakes.events import RecordingEventSink
from tests.fakes.kv_transfer import FakeKVTransfer, block_bytes
from tests.fakes.l1_memory import FakeL1Memory

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from lmcache.domain.kv_layout import RegisteredLayout
    from tests.fakes.l2_adapter import FakeL2Adapter

CS = 4  # tokens per chunk
BS = 2  # tokens per block: 2 blocks per chunk
NB = 64  # engine blocks
MODEL = "org/model"
NULL = 0  # --null-block-id


def layout() -> RegisteredLayout:
    """Two layers of `[2, NB, BS, 1, 8]` fp16: a 256-byte object per chunk."""
    shape = (2, NB, BS, 1, 8)
    spec = TensorSpec("float16", shape, (NB * BS * 8, BS * 8, 8, 8, 1))
    return build_layout([spec, spec], {"kv_layout": "NHD"}, [], CS)


OBJECT_BYTES = layout().object_bytes


@dataclass
class ManualLoop:
    """The storage loop's `submit`: keeps coroutines until `run` (a test decides when L2 work happens)."""

    pending: list[tuple[Coroutine[Any, Any, Any], Future[Any]]] = field(default_factory=list)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending.append((coro, future))
        return future

    def run(self) -> None:
        while self.pending:
            jobs, self.pending = self.pending, []
            for coro, future in jobs:
                try:
                    future.set_result(asyncio.run(coro))
                except Exception as exc:
                    future.set_exception(exc)


@dataclass
class Server:
    """Everything a test touches."""

    clock: FakeClock
    events: RecordingEventSink
    memory: FakeL1Memory
    l1: L1Manager
    kv_events: KVEventLog
    engine: CacheEngine
    loop: ManualLoop
    adapters: list[FakeL2Adapter]

    def register(self, instance_id: int = 1, world_size: int = 1) -> FakeKVTransfer:
        """An lmcache-driven worker whose engine blocks are random bytes."""
        lay = layout()
        transfer = FakeKVTransfer(lay, self.memory)
        rng = random.Random(instance_id)
        for block in range(NB):
            transfer.blocks[(0, block)] = rng.randbytes(block_bytes(lay.groups[0]))
        now = self.clock.monotonic()
        worker = Worker(instance_id, MODEL, world_size, "lmcache_driven", lay, transfer, now, now)
        self.engine.workers.add(worker)
        return transfer

    def key(self, oid: ObjectKey | bytes, rank: int = 0, world_size: int = 1, salt: str = "") -> ObjectKey:
        digest = oid.chunk_hash if isinstance(oid, ObjectKey) else oid
        return ObjectKey(digest, MODEL, pack_kv_rank(world_size, rank), 0, salt)

    def keys(
        self, tokens: Sequence[int], rank: int = 0, world_size: int = 1, salt: str = ""
    ) -> list[ObjectKey]:
        """This rank's key of every full chunk of `tokens`."""
        return [self.key(d, rank, world_size, salt) for d in digests(tokens)]

    def object(self, key: ObjectKey) -> bytes | None:
        """The bytes of a visible L1 object."""
        extent = self.l1.extent(key)
        return None if extent is None else bytes(self.memory.view(extent.offset, OBJECT_BYTES))


def digests(tokens: Sequence[int]) -> list[bytes]:
    """The chunk hash chain of `tokens` (wire-protocol.md §6.1), computed apart from the engine."""
    chain = TokenHasher(CS).new_chain()
    return chain.hashes(tokens, 0, len(tokens) // CS * CS)


def request(
    tokens: Sequence[int],
    rid: str = "req",
    start: int = 0,
    end: int | None = None,
    worker_id: int | None = 0,
    world_size: int = 1,
    readers: int = 1,
    salt: str = "",
) -> RequestKey:
    stop = len(tokens) if end is None else end
    return RequestKey(MODEL, world_size, worker_id, list(tokens), start, stop, rid, salt, readers)


def blocks(first: int, chunks: int) -> list[list[int]]:
    """One block list of `chunks` chunks starting at block `first` (never the null block)."""
    return [list(range(first, first + chunks * (CS // BS)))]


def make_server(slots: int = 32, adapters: list[FakeL2Adapter] | None = None) -> Server:
    """A server with room for `slots` objects and the given L2 cascade."""
    clock, events = FakeClock(), RecordingEventSink()
    kv_events = KVEventLog(1024, incarnation=1)
    sink = FanoutEventSink([kv_events, events])
    l1 = L1Manager(ArenaAllocator(slots * OBJECT_BYTES, 64), LruPolicy(), clock, sink)
    memory = FakeL1Memory(slots * OBJECT_BYTES)
    cascade = adapters or []
    loop = ManualLoop()
    engine = CacheEngine(
        l1,
        SessionManager(l1, TokenHasher(CS), clock, digests=DigestCache()),
        WorkerRegistry(clock),
        PrefetchController(l1, memory, cascade, events=sink),
        StoreController(l1, memory, cascade, events=sink),
        loop.submit,
        kv_events,
        null_block_id=NULL,
        events=sink,
    )
    return Server(clock, events, memory, l1, kv_events, engine, loop, cascade)
