"""The traced engine records what replay needs, and a replay reproduces the live lookups exactly."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING

import pytest

from lmcache.adapters.trace.player import play
from lmcache.adapters.trace.reader import open_series
from lmcache.app.replay_container import replay_engine
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.keys import ObjectKey
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController, PrefetchRequest
from lmcache.domain.session_types import PrefetchJob
from lmcache.domain.store_controller import StoreController
from lmcache.domain.trace_hooks import (
    TracedEvictionLoop,
    TracedL1Manager,
    TracedPrefetchController,
    TracedQuotaTable,
    TracedStoreController,
)
from lmcache.domain.trace_replay import ReplayEngine, ReplaySettings
from tests.fakes.clock import FakeClock
from tests.fakes.l2_adapter import FakeL2Adapter
from tests.fakes.trace import RecordingTraceSink
from tests.unit._trace_workload import OBJ, Workload, record_trace

if TYPE_CHECKING:
    from pathlib import Path


def k(i: int) -> ObjectKey:
    return ObjectKey(bytes([i]) * 8, "m", 1)


def traced_l1(sink: RecordingTraceSink, clock: FakeClock, objects: int = 8) -> TracedL1Manager:
    return TracedL1Manager(ArenaAllocator(objects * OBJ, 4096), LruPolicy(), clock, tracer=sink)


def replay(path: Path, **settings: object) -> ReplayEngine:
    engine = replay_engine(ReplaySettings(**settings))  # type: ignore[arg-type]
    files = open_series([path])
    result = play(files, engine)
    assert result.failed == 0 and not result.skipped, (result.errors, result.skipped)
    return engine


def test_l1_calls_are_recorded_with_their_arguments_in_order() -> None:
    sink, clock = RecordingTraceSink(), FakeClock()
    l1 = traced_l1(sink, clock)
    l1.reserve(iter([k(1), k(2)]), OBJ)  # an iterator is recorded and still used
    l1.finish((x for x in [k(1), k(2)]), read_locks=1)
    l1.extent(k(1))
    l1.unlock_read([k(1)], 1)
    l1.readers(k(1))
    l1.contains(k(2))  # read-only queries other than extent are not recorded
    l1.delete([k(2)], force=True)
    assert sink.names == ["reserve", "finish", "extent", "unlock_read", "delete"]
    assert sink.calls[0][1] == {"keys": [k(1), k(2)], "sizes": OBJ}
    assert sink.calls[1][1] == {"keys": [k(1), k(2)], "read_locks": 1, "temporary": False}
    assert l1.contains(k(1)) and not l1.contains(k(2))


def test_composite_calls_are_one_record_each() -> None:
    sink, clock = RecordingTraceSink(), FakeClock()
    l1 = traced_l1(sink, clock, objects=4)
    loop = TracedEvictionLoop(l1, 0.5, 0.5, tracer=sink)
    prefetch = TracedPrefetchController(l1, None, [], tracer=sink)  # type: ignore[arg-type]
    l1.finish([x for x, e in zip([k(1), k(2), k(3)], l1.reserve([k(1), k(2), k(3)], OBJ), strict=True) if e])
    sink.calls.clear()
    loop.step()  # evicts (3 of 4 used > 0.5): its reap/evict calls are not recorded separately
    assert sink.names == ["step"]
    job = PrefetchJob()
    prefetch.run_job_now(PrefetchRequest([[k(1), k(2), k(3)], [k(4), k(5), k(6)]], [OBJ, OBJ], 2), job)
    assert sink.names == ["step", "run_job_now"]
    args = sink.calls[1][1]
    assert args["rows"] == [[k(1), k(2), k(3)], [k(4), k(5), k(6)]] and args["num_kv_readers"] == 2
    assert args["outcome"] == {"prefix_chunks": job.result, "l1_hits": 0, "l2_hits": 0}


def test_async_prefetch_hides_only_its_own_l1_calls() -> None:
    sink, clock = RecordingTraceSink(), FakeClock()
    l1 = traced_l1(sink, clock)
    adapter = FakeL2Adapter()
    prefetch = TracedPrefetchController(l1, _Memory(), [adapter], tracer=sink)

    async def scenario() -> None:
        adapter.objects[k(1)] = b"\0" * OBJ
        lookup = asyncio.create_task(prefetch.prefetch(PrefetchRequest([[k(1), k(2)]], [OBJ], 1)))
        await asyncio.sleep(0)  # the prefetch is suspended on L2: another task's call is still recorded
        l1.touch([k(9)])
        result = await lookup
        assert result.prefix_chunks == 1 and result.l2_hits == 1

    asyncio.run(scenario())
    assert sink.names == ["touch", "prefetch"]
    assert sink.calls[1][1]["outcome"] == {"prefix_chunks": 1, "l1_hits": 0, "l2_hits": 1}


class _Memory:
    def view(self, offset: int, size: int) -> memoryview:
        return memoryview(bytearray(size))


def test_store_submissions_adapter_stores_and_quota_changes_are_recorded() -> None:
    sink, clock = RecordingTraceSink(), FakeClock()
    l1 = traced_l1(sink, clock)
    adapter = FakeL2Adapter()
    store = TracedStoreController(l1, _Memory(), [adapter], queue_size=2, tracer=sink)  # type: ignore[arg-type]
    assert all(l1.reserve([k(1), k(2)], OBJ))
    l1.finish([k(1), k(2)])
    adapter.fail_next_stores(1)
    sink.calls.clear()
    assert store.submit([k(1), k(2), k(3)]) == 2  # only what the queue accepted is recorded
    asyncio.run(store.drain())
    assert sink.calls[0] == ("submit", {"keys": [k(1), k(2)]})
    assert ("store", {"adapter": 0, "keys": [k(2)]}) in sink.calls  # only what the adapter stored
    sink.calls.clear()
    quotas = TracedQuotaTable(tracer=sink)
    quotas.set("a", 100)
    with pytest.raises(ValueError):
        quotas.set("a", -1)  # refused: not recorded
    quotas.delete("a")
    quotas.delete("a")  # nothing to delete: not recorded
    assert sink.calls == [
        ("set", {"salt": "a", "limit_bytes": 100}),
        ("delete", {"salt": "a"}),
    ]


@pytest.mark.parametrize("policy", ["LRU", "IsolatedLRU", "noop"])
def test_replay_reproduces_every_live_lookup(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "t.lct"
    live = record_trace(path, n=600, policy=policy)
    assert 0 < sum(live) < 6 * len(live), "the workload must both hit and miss"
    engine = replay(path, l1_bytes=64 * OBJ, eviction_policy=policy)
    assert list(engine.stats.per_lookup) == live
    assert engine.stats.evicted_objects > 0 or policy == "noop"


def test_replay_at_other_sizes_is_monotone_and_leaks_no_locks(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    record_trace(path, n=600)
    rates, held = [], []
    for objects in (16, 64, 256):
        engine = replay(path, l1_bytes=objects * OBJ)
        rates.append(engine.stats.hit_rate)
        page, _ = engine.l1.objects_page(0, 10_000)
        held.append({o.key: o.readers for o in page if o.readers})  # dead clients' locks, within TTL
        if objects == 16:
            assert engine.stats.written_back > 0  # misses the live run served are stored again
    assert rates[0] < rates[1] < rates[2]
    assert held[1], "the workload's dead clients hold locks at the end"
    assert held[2] == held[1]  # a larger cache holds exactly the live run's locks, none past its prefixes


def test_larger_cache_keeps_no_lock_past_the_live_prefix() -> None:
    engine = replay_engine(ReplaySettings(l1_bytes=8 * OBJ))
    keys = [k(1), k(2), k(3)]
    engine.finish([x for x, e in zip(keys, engine.l1.reserve(keys, OBJ), strict=True) if e])
    prefix = engine.lookup([keys], [OBJ], 1, live_prefix=1)  # live, only the first chunk was there
    assert prefix == 3 and engine.stats.hit_chunks == 3
    assert [engine.l1.readers(x) for x in keys] == [1, 0, 0]


def test_smaller_cache_writes_back_what_the_live_engine_served() -> None:
    engine = replay_engine(ReplaySettings(l1_bytes=8 * OBJ))
    keys = [k(1), k(2)]
    assert engine.lookup([keys], [OBJ], 1, live_prefix=2) == 0
    assert engine.stats.written_back == 2 and all(engine.l1.contains(x) for x in keys)
    assert [engine.l1.readers(x) for x in keys] == [0, 0]


def test_simulated_l2_serves_only_what_an_adapter_stored() -> None:
    engine = replay_engine(ReplaySettings(l1_bytes=8 * OBJ, l2=True))
    engine.l2_submit([k(1), k(2)])  # a trace without adapter-store records: submissions count
    assert engine.lookup([[k(1)]], [OBJ], 1) == 1
    engine.l2_store([k(2)])  # once stores are recorded, a submission alone is not loadable
    engine.l2_submit([k(3)])
    assert engine.lookup([[k(2), k(3)]], [OBJ], 1) == 1


def test_simulated_l2_serves_what_was_stored() -> None:
    engine = replay_engine(ReplaySettings(l1_bytes=8 * OBJ, l2=True))
    engine.l2_store([k(1), k(2)])
    assert engine.lookup([[k(1), k(2), k(3)]], [OBJ], 1) == 2
    assert engine.stats.l2_hit_objects == 2 and engine.stats.l1_hit_objects == 0
    engine.l1.unlock_read([k(1), k(2)], 1)
    assert not engine.l1.contains(k(1))  # default prefetch policy: temporary, gone after its reader
    no_l2 = replay_engine(ReplaySettings(l1_bytes=8 * OBJ))
    no_l2.l2_store([k(1)])
    assert no_l2.lookup([[k(1)]], [OBJ], 1) == 0


def test_lookup_log_replay_stores_misses() -> None:
    engine = replay_engine(ReplaySettings(l1_bytes=4 * OBJ))
    a, b = [k(1), k(2)], [k(1), k(2), k(3)]
    assert engine.lookup_and_fill(a, OBJ) == 0
    assert engine.lookup_and_fill(b, OBJ) == 2
    assert engine.lookup_and_fill(b, OBJ) == 3
    assert engine.stats.hit_chunks == 5 and engine.stats.lookup_chunks == 8
    assert all(engine.l1.readers(x) == 0 for x in b)


def test_workload_helper_is_deterministic() -> None:
    first = Workload(RecordingTraceSink()).run(100)
    assert Workload(RecordingTraceSink()).run(100) == first


# Public methods that only read state (not recorded). A method the storage engine gains must be added
# either here or to the traced subclass, so no state change slips past the trace unnoticed.
READ_ONLY = {
    L1Manager: {
        "contains",
        "lock_counts",
        "objects_page",
        "prefix_len",
        "readers",
        "stats",
        "usage_by_salt",
        "write_extent",
    },
    PrefetchController: {"run_job"},  # runs `prefetch`, which is traced
    StoreController: {"drain", "run"},  # the L2 writer loop: its L1 calls are recorded as they happen
    EvictionLoop: set(),
}
TRACED = {
    L1Manager: TracedL1Manager,
    PrefetchController: TracedPrefetchController,
    StoreController: TracedStoreController,
    EvictionLoop: TracedEvictionLoop,
}


@pytest.mark.parametrize("plain", list(TRACED), ids=lambda c: c.__name__)
def test_every_state_changing_method_is_traced(plain: type) -> None:
    public = {n for n, v in inspect.getmembers(plain) if not n.startswith("_") and callable(v)}
    traced = {n for n in public if n in vars(TRACED[plain])}
    assert public - traced == READ_ONLY[plain]
