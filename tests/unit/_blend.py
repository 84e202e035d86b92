"""A CacheBlend server in miniature for unit tests: a real cache engine over fake ports.

The engine's worker has a one-group layout (2 layers of `[2, NB, BS, NH, HS]` fp16 geometry) whose
transfer is a no-op fake, so stores commit empty objects; what the tests check is which objects exist,
which are locked, and what the blend services answer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.blend_index import FingerprintIndex
from lmcache.domain.blend_lookup import BlendLookupService
from lmcache.domain.blend_prefetch import SparsePrefetcher
from lmcache.domain.blend_registry import RopeRegistration, RopeRegistry
from lmcache.domain.blend_retrieve import BlendRetriever
from lmcache.domain.blend_rope import CacheShape, RopeSpec, plan_rotation
from lmcache.domain.blend_stash import BlendStash
from lmcache.domain.blend_store import BlendRegistrar
from lmcache.domain.cache_engine import CacheEngine, RequestKey
from lmcache.domain.digest_cache import DigestCache
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.keys import ObjectKey, pack_kv_rank
from lmcache.domain.kv_events import KVEventLog
from lmcache.domain.kv_layout import EngineGroup, TensorSpec, build_layout
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController
from lmcache.domain.sessions import SessionManager
from lmcache.domain.store_controller import StoreController
from lmcache.domain.workers import Worker, WorkerRegistry
from tests.fakes.blend import FakeFleet, FakeProbe, RecordingScatter
from tests.fakes.clock import FakeClock
from tests.fakes.events import RecordingEventSink
from tests.fakes.l1_memory import FakeL1Memory

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_layout import RegisteredLayout
    from tests.fakes.l2_adapter import FakeL2Adapter

CS = 4
MODEL = "m"
NB = 64


class NullTransfer:
    """Copies nothing (the unit tests check bookkeeping, not bytes)."""

    def __init__(self, layout: RegisteredLayout) -> None:
        self.layout = layout

    def gather(
        self, block_ids: Sequence[Sequence[int]], chunks: Sequence[int], extents: Sequence[Extent]
    ) -> None:
        pass

    def scatter(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int = 0,
    ) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class ManualLoop:
    """`submit` that keeps coroutines until the test runs them (so "still loading" is observable)."""

    pending: list[tuple[Coroutine[Any, Any, Any], Future[Any]]] = field(default_factory=list)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending.append((coro, future))
        return future

    def run(self) -> None:
        jobs, self.pending = self.pending, []
        for coro, future in jobs:
            try:
                future.set_result(asyncio.run(coro))
            except Exception as exc:
                future.set_exception(exc)


def layout(world_blocks: int = NB) -> RegisteredLayout:
    spec = TensorSpec("float16", (2, world_blocks, CS, 1, 8), (world_blocks * CS * 8, CS * 8, 8, 8, 1))
    return build_layout([spec, spec], {"kv_layout": "NHD"}, [EngineGroup(0, (0, 1), CS)], CS)


@dataclass
class Blend:
    """Everything a blend unit test touches."""

    clock: FakeClock
    l1: L1Manager
    engine: CacheEngine
    index: FingerprintIndex
    probe: FakeProbe
    stash: BlendStash
    lookups: BlendLookupService
    retriever: BlendRetriever
    registry: RopeRegistry
    loop: ManualLoop
    events: RecordingEventSink
    fleet: FakeFleet | None
    adapters: list[FakeL2Adapter]

    def register_worker(self, instance_id: int = 1, world_size: int = 1) -> Worker:
        lay = layout()
        worker = Worker(instance_id, MODEL, world_size, "lmcache_driven", lay, NullTransfer(lay), 0.0, 0.0)
        worker.extra["engine_group_ids"] = [0]
        self.engine.workers.add(worker)
        return worker

    def register_rope(
        self, instance_id: int = 1, scatter: RecordingScatter | None = None
    ) -> RecordingScatter:
        worker = self.engine.workers.get(instance_id)
        assert worker is not None
        spec = RopeSpec(8, True, (), (), (), "", (CacheShape(1024, 8, "float32"),))
        plan = plan_rotation(spec, worker.layout, [0])
        scatter = scatter or RecordingScatter()
        self.registry.put(RopeRegistration(instance_id, MODEL, worker.world_size, plan, scatter))
        return scatter

    def store(self, tokens: list[int], rid: str = "store", worker_id: int = 0, world_size: int = 1) -> None:
        blocks = list(range(1, len(tokens) // CS + 1))
        key = RequestKey(MODEL, world_size, worker_id, tokens, 0, len(tokens) // CS * CS, rid, "", 1)
        outcome = self.engine.store(key, 1, [blocks])
        assert outcome.ok
        self.engine.end_session(rid)

    def lookup(
        self, tokens: list[int], rid: str, salt: str = "", readers: int = 1, world_size: int = 1
    ) -> Any:
        return self.lookups.lookup(
            RequestKey(MODEL, world_size, None, tokens, 0, len(tokens), rid, salt, readers)
        )

    def key_of(self, chunk_hash: bytes, rank: int = 0, world_size: int = 1) -> ObjectKey:
        return ObjectKey(chunk_hash, MODEL, pack_kv_rank(world_size, rank), 0, "")


def make_blend(
    adapters: list[FakeL2Adapter] | None = None, fleet: FakeFleet | None = None, segmented: bool = False
) -> Blend:
    clock = FakeClock()
    events = RecordingEventSink()
    object_bytes = layout().object_bytes
    slots = 256
    l1 = L1Manager(ArenaAllocator(slots * object_bytes, 64), LruPolicy(), clock, events)
    memory = FakeL1Memory(slots * object_bytes)
    adapters = adapters or []
    loop = ManualLoop()
    sessions = SessionManager(l1, TokenHasher(CS), clock, digests=DigestCache())
    workers = WorkerRegistry(clock)
    probe = FakeProbe()
    index = FingerprintIndex(CS, probe)
    engine = CacheEngine(
        l1,
        sessions,
        workers,
        PrefetchController(l1, memory, adapters),
        StoreController(l1, memory, adapters),
        loop.submit,
        KVEventLog(0, 0),
        events=events,
        store_listener=BlendRegistrar(index, fleet),
    )
    stash = BlendStash(l1)
    prefetcher = SparsePrefetcher(l1, memory, adapters, events=events)
    lookups = BlendLookupService(
        engine,
        index,
        prefetcher,
        stash,
        clock,
        submit=loop.submit,
        fleet=fleet,
        segmented_prefix=segmented,
        events=events,
    )
    registry = RopeRegistry()
    retriever = BlendRetriever(l1, workers, registry, stash, CS, events)
    return Blend(
        clock, l1, engine, index, probe, stash, lookups, retriever, registry, loop, events, fleet, adapters
    )
