"""Per-adapter L2 eviction over real backends: a small tier keeps taking stores and stays under capacity.

fs and Redis tiers of about 16 objects take four times that and still serve their newest objects byte for
byte; pins, restarts, noop and ARC behave as documented.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.domain.events import L2Deleted, L2Evicted
from lmcache.domain.units import gb_to_bytes
from tests.fakes.events import RecordingEventSink
from tests.integration.l2.conftest import resp_spec
from tests.integration.l2.test_contract import empty, key

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.ports.l2_adapter import L2Usage
    from tests.integration.l2.servers import RedisServer

OBJECT = 64 << 10
CAPACITY_GB = 0.001  # 1,073,741 bytes: about 16 objects of 64 KiB with their headers


def build(spec: dict[str, Any], events: Any = None) -> Any:
    from lmcache.app.config.l2 import L2Config
    from lmcache.app.l2_container import l2_adapters

    parsed = L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter
    return l2_adapters(parsed, events=events)[0]  # with the resilience wrapper, as the server


def spec_for(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, policy: str = "LRU"
) -> dict[str, Any]:
    eviction = {"eviction_policy": policy, "trigger_watermark": 0.8, "eviction_ratio": 0.25}
    if backend == "fs":
        return {
            "type": "fs",
            "base_path": str(tmp_path / "l2"),
            "max_capacity_gb": CAPACITY_GB,
            "eviction": eviction,
        }
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    return {**resp_spec(server), "max_capacity_gb": CAPACITY_GB, "eviction": eviction}


def data(i: int) -> memoryview:
    return memoryview(bytes([i % 251]) * 16 + os.urandom(OBJECT - 16))


async def backend_usage(adapter: Any) -> L2Usage:
    inner = adapter
    while hasattr(inner, "inner"):
        inner = inner.inner
    usage: L2Usage = await inner.usage()
    return usage


@pytest.mark.parametrize("backend", ["fs", "resp"])
async def test_a_small_tier_stays_under_capacity_and_serves_the_newest(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    events = RecordingEventSink()
    adapter = build(spec_for(backend, tmp_path, request), events)
    capacity = gb_to_bytes(CAPACITY_GB)
    written = {}
    for i in range(60):  # ~4x the capacity, in batches of three as the store controller sends them
        batch = [key(i * 3 + j) for j in range(3)]
        blobs = [data(i * 3 + j) for j in range(3)]
        assert await adapter.store(batch, blobs) == [True, True, True], f"batch {i} was refused"
        written.update(zip(batch, blobs, strict=True))
        usage = await backend_usage(adapter)
        assert usage.used_bytes <= capacity, f"batch {i}: {usage.used_bytes} bytes > {capacity}"
    newest = list(written)[-6:]
    out = [empty(OBJECT) for _ in newest]
    assert await adapter.load(newest, out) == [True] * 6
    assert [bytes(o) for o in out] == [bytes(written[k]) for k in newest]
    oldest = list(written)[:3]
    assert await adapter.lookup_and_lock(oldest) == [False] * 3
    stats = adapter.eviction_stats()
    assert stats.evicted_objects >= 150 and stats.rejected_objects == 0
    assert stats.used_bytes <= capacity
    evicted = [e for e in events.events if isinstance(e, L2Evicted)]
    assert sum(len(e.keys) for e in evicted) == stats.evicted_objects
    assert all(
        isinstance(e, L2Deleted) and e.adapter_index == 0 for e in evicted
    )  # the coordinator sees them
    await adapter.close()


async def test_objects_pinned_by_a_prefetch_are_not_evicted(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    adapter = build(spec_for("fs", tmp_path, request))
    first = [key(i) for i in range(3)]
    assert await adapter.store(first, [data(i) for i in range(3)]) == [True] * 3
    assert await adapter.lookup_and_lock(first) == [True] * 3  # a prefetch holds them
    for i in range(3, 40):
        assert await adapter.store([key(i)], [data(i)]) == [True]
    out = [empty(OBJECT) for _ in first]
    assert await adapter.load(first, out) == [True] * 3
    await adapter.unlock(first)
    for i in range(40, 60):
        await adapter.store([key(i)], [data(i)])
    assert await adapter.lookup_and_lock(first) == [False] * 3  # unpinned, they were the oldest
    await adapter.close()


async def test_a_restart_counts_what_the_tier_already_holds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec = spec_for("fs", tmp_path, request)
    first = build(spec)
    for i in range(10):
        assert await first.store([key(i)], [data(i)]) == [True]
    held = first.eviction_stats().used_bytes
    await first.close()
    again = build(spec)
    assert await again.lookup_and_lock([key(0)]) == [True]  # the first call lists the tier
    await again.unlock([key(0)])
    stats = again.eviction_stats()
    assert (stats.objects, stats.used_bytes) == (10, held)
    for i in range(10, 40):
        assert await again.store([key(i)], [data(i)]) == [True]
    assert (await backend_usage(again)).used_bytes <= gb_to_bytes(CAPACITY_GB)
    await again.close()


async def test_noop_refuses_what_does_not_fit(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    adapter = build(spec_for("resp", tmp_path, request, policy="noop"))
    results = [(await adapter.store([key(i)], [data(i)]))[0] for i in range(30)]
    assert results[:10] == [True] * 10 and results[-5:] == [False] * 5
    stats = adapter.eviction_stats()
    assert stats.evicted_objects == 0 and stats.rejected_objects == results.count(False)
    assert (await backend_usage(adapter)).used_bytes <= gb_to_bytes(CAPACITY_GB)
    await adapter.close()


async def test_arc_eviction_over_fs_keeps_the_objects_read_twice(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    adapter = build(spec_for("fs", tmp_path, request, policy="ARC"))
    hot = [key(i) for i in range(4)]
    assert await adapter.store(hot, [data(i) for i in range(4)]) == [True] * 4
    assert await adapter.load(hot, [empty(OBJECT) for _ in hot]) == [True] * 4  # used again: frequent
    for i in range(100, 160):  # a scan of objects used once
        assert await adapter.store([key(i)], [data(i)]) == [True]
    assert await adapter.lookup_and_lock(hot) == [True] * 4
    await adapter.unlock(hot)
    await adapter.close()


def test_eviction_without_a_capacity_warns_as_lmcache_ignores_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = {"type": "fs", "base_path": str(tmp_path), "eviction": {"eviction_policy": "LRU"}}
    with caplog.at_level("WARNING", logger="lmcache"):
        adapter = build(spec)
    assert not hasattr(adapter, "eviction_stats")
    assert any('"eviction" (LRU) has no effect without a capacity' in r.getMessage() for r in caplog.records)


async def test_isolated_lru_without_a_capacity_still_enforces_quotas(tmp_path: Path) -> None:
    from lmcache.app.config.l2 import L2Config
    from lmcache.app.l2_container import l2_adapters
    from lmcache.domain.quotas import QuotaTable

    quotas = QuotaTable()
    quotas.set("a", 3 * OBJECT)
    spec = {"type": "fs", "base_path": str(tmp_path), "eviction": {"eviction_policy": "IsolatedLRU"}}
    parsed = L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter
    adapter = l2_adapters(parsed, quotas=quotas)[0]
    for i in range(6):
        assert await adapter.store([key(i, salt="a")], [data(i)]) == [True]
    held = await adapter.lookup_and_lock([key(i, salt="a") for i in range(6)])
    assert held == [False, False, False, True, True, True]  # at most the quota (plus the newest store)
    await adapter.close()
