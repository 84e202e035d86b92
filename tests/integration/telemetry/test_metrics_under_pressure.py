"""Metrics that only move under pressure, scraped from a real server before and after.

L1 evictions and allocation failures in a small L1, an fs L2 adapter's stores, loads, bytes and failures,
the event bus gauges.

The L1 here is 0.002 GB: 8 chunks of 256 KiB (CHUNK_BYTES); each stored sequence is 2 chunks.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from lmcache.domain.events import EvictionReason
from tests.integration.server.conftest import (
    CHUNK_BYTES,
    Engine,
    free_port,
    hit_chunks,
    key,
    run_server,
    tokens_for,
)
from tests.integration.telemetry.conftest import port_flags, sample, scrape, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.adapters.transport.client import LMCacheClient
    from tests.integration.telemetry.conftest import Samples

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 32 blocks of 16
SMALL_L1 = "0.002"
REASONS = tuple(reason.value for reason in EvictionReason)


def _store(c: LMCacheClient, seq: int) -> bool:
    tokens = tokens_for(seq)
    ok = bool(c.store(key(tokens, f"store-{seq}", end=512), 1000, [BLOCKS], b"")[1])
    c.end_session(f"store-{seq}")
    return ok


def _evictions(s: Samples, name: str = "lmcache_mp_l1_evictions_total") -> dict[str, float]:
    return {reason: sample(s, name, reason=reason) for reason in REASONS}


def _fits(port: int) -> int:
    """Chunks the L1 arena holds."""
    return int(sample(scrape(port), "lmcache_mp_l1_capacity_bytes") // CHUNK_BYTES)


def _settled(port: int) -> Samples:
    """A scrape taken once the bus is drained and L1's objects balance (writes - evictions == objects).

    The balance holds only when every eviction and commit event reached the metrics.
    """
    got: list[Samples] = []

    def balanced() -> bool:
        s = scrape(port)
        got[:] = [s]
        removed = sum(_evictions(s).values())
        return sample(s, "lmcache_mp_event_bus_queue_depth") == 0 and sample(
            s, "lmcache_mp_l1_writes_total"
        ) - removed == sample(s, "lmcache_mp_l1_objects")

    wait_for(balanced)
    return got[0]


def test_a_full_l1_evicts_on_demand_the_least_recently_used() -> None:
    port = free_port()
    # Watermark 1: the background loop never starts (8 of 8.19 chunks is < 100%), so every eviction
    # is an allocation making room.
    flags = [*port_flags(port), "--eviction-trigger-watermark", "1"]
    with run_server(*flags, l1_gb=SMALL_L1) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        fits = _fits(port)
        assert fits == 8
        assert _evictions(scrape(port)) == dict.fromkeys(REASONS, 0)
        stored = fits // 2 + 2  # two sequences more than fit
        assert all(_store(c, seq) for seq in range(stored))
        after = _settled(port)
        evicted = 2 * stored - fits
        assert _evictions(after) == {**dict.fromkeys(REASONS, 0), "on_demand": evicted}
        assert _evictions(after, "lmcache_mp_l1_evicted_bytes_total")["on_demand"] == evicted * CHUNK_BYTES
        assert sample(after, "lmcache_mp_l1_allocation_failures_total") == 0
        assert sample(after, "lmcache_mp_l1_objects") == fits
        assert sample(after, "lmcache_mp_l1_usage_bytes") == fits * CHUNK_BYTES
        # Least recently used first: the two oldest sequences are gone, the newest is whole.
        assert hit_chunks(c, tokens_for(0), "oldest") == 0
        assert hit_chunks(c, tokens_for(1), "second-oldest") == 0
        assert hit_chunks(c, tokens_for(stored - 1), "newest") == 2
        engine.close()


def test_the_eviction_loop_evicts_past_the_watermark() -> None:
    port = free_port()
    flags = [*port_flags(port), "--eviction-trigger-watermark", "0.5", "--eviction-ratio", "0.2"]
    with run_server(*flags, l1_gb=SMALL_L1) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        assert all(_store(c, seq) for seq in range(3))  # 6 of 8 chunks: past 50%, and no allocation waits
        wait_for(lambda: _evictions(scrape(port))["watermark"] > 0)
        after = _settled(port)
        evictions = _evictions(after)
        assert evictions["on_demand"] == 0
        assert evictions["watermark"] == 6 - sample(after, "lmcache_mp_l1_objects")
        wait_for(lambda: sample(scrape(port), "lmcache_mp_l1_usage_ratio") < 0.5)
        assert sample(scrape(port), "lmcache_mp_l1_allocation_failures_total") == 0
        engine.close()


@pytest.mark.parametrize("policy", ["LRU", "noop"])
def test_allocation_failures_count_objects_that_found_no_room(policy: str) -> None:
    """LRU: every resident object is read-locked by a pending lookup; noop: L1 never evicts."""
    port = free_port()
    flags = [*port_flags(port), "--eviction-policy", policy, "--eviction-trigger-watermark", "1"]
    with run_server(*flags, l1_gb=SMALL_L1) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        full = _fits(port) // 2
        assert all(_store(c, seq) for seq in range(full))
        if policy == "LRU":
            for seq in range(full):  # a scheduler's lookups: read locks until the retrieve
                assert hit_chunks(c, tokens_for(seq), f"lock-{seq}") == 2
        assert sample(_settled(port), "lmcache_mp_l1_allocation_failures_total") == 0

        # No room for either chunk: skipped, and the reply still says "no fatal error" (wire-protocol §5.5).
        assert _store(c, 100)
        wait_for(lambda: sample(scrape(port), "lmcache_mp_l1_allocation_failures_total") == 2)
        after = _settled(port)
        assert sum(_evictions(after).values()) == 0
        assert sample(after, "lmcache_mp_l1_writes_total") == 2 * full
        assert sample(after, "lmcache_mp_store_tokens_total") == 512 * full
        assert sample(after, "lmcache_mp_request_errors_total", op="store") == 0
        assert hit_chunks(c, tokens_for(100), "not-stored") == 0
        if policy == "LRU":  # once the lookups' locks go, the same store makes room
            for seq in range(full):
                c.free_lookup_locks(key(tokens_for(seq), f"lock-{seq}", worker=None, end=512))
            assert _store(c, 100)
            wait_for(lambda: _evictions(scrape(port))["on_demand"] == 2)
            assert sample(_settled(port), "lmcache_mp_l1_allocation_failures_total") == 2
        engine.close()


def _corrupt(path: Path) -> None:
    """Flip the last payload byte of an fs object file (its checksum then fails)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_fs_adapter_counts_stores_loads_bytes_and_failures(tmp_path: Path) -> None:
    port = free_port()
    base = tmp_path / "l2"
    # Room for two objects (each 256 KiB + header; the adapter admits 4 KiB + payload per object).
    spec = {"type": "fs", "base_path": str(base), "max_capacity_gb": 0.0005}
    labels = {"adapter": "0", "type": "fs"}
    counters = (
        "stored_objects",
        "stored_bytes",
        "store_failures",
        "loaded_objects",
        "loaded_bytes",
        "load_failures",
    )

    def l2(s: Samples) -> dict[str, float]:
        return {n: sample(s, f"lmcache_mp_l2_{n}_total", **labels) for n in counters}

    flags = [*port_flags(port), "--l2-adapter", json.dumps(spec)]
    with run_server(*flags) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        before = scrape(port)
        assert (
            "lmcache_mp_l2_stored_objects_total",
            frozenset(labels.items()),
        ) in before  # labelled at start
        assert l2(before) == dict.fromkeys(counters, 0)

        assert _store(c, 1)
        wait_for(lambda: l2(scrape(port))["stored_objects"] == 2)
        assert _store(c, 2)  # L1 takes it; the full fs tier refuses both objects
        wait_for(lambda: l2(scrape(port))["store_failures"] == 2)
        assert l2(scrape(port)) == {
            **dict.fromkeys(counters, 0),
            "stored_objects": 2,
            "stored_bytes": 2 * CHUNK_BYTES,
            "store_failures": 2,
        }
        files = sorted(base.glob("*/*.kv"))
        assert len(files) == 2

        c.clear(True)  # L1 empty: the next lookup loads from the fs tier
        assert hit_chunks(c, tokens_for(1), "from-l2") == 2
        # Released as an engine does (a forced clear keeps the memory of objects still locked).
        c.free_lookup_locks(key(tokens_for(1), "from-l2", worker=None, end=512))
        c.end_session("from-l2")
        wait_for(lambda: l2(scrape(port))["loaded_objects"] == 2)
        loaded = scrape(port)
        assert l2(loaded)["loaded_bytes"] == 2 * CHUNK_BYTES and l2(loaded)["load_failures"] == 0
        assert sample(loaded, "lmcache_mp_lookup_hit_tokens_total", tier="l2") == 512

        for path in files:
            _corrupt(path)
        c.clear(True)
        assert hit_chunks(c, tokens_for(1), "corrupt") == 0
        c.end_session("corrupt")
        wait_for(lambda: l2(scrape(port))["load_failures"] == 2)
        after = scrape(port)
        assert l2(after) == {**l2(loaded), "load_failures": 2}
        assert sample(after, "lmcache_mp_lookup_hit_tokens_total", tier="l2") == 512
        assert sample(after, "lmcache_mp_prefetch_l2_errors_total") == 0  # corrupt is a miss, not an error
        engine.close()


def test_the_event_bus_gauges_are_exported_and_drain_to_zero() -> None:
    port = free_port()
    with run_server(*port_flags(port), "--event-bus-queue-size", "64") as srv, srv.client() as c:
        first = scrape(port)
        assert ("lmcache_mp_event_bus_queue_depth", frozenset()) in first
        assert sample(first, "lmcache_mp_event_bus_queue_capacity") == 64
        engine = Engine(c)
        engine.register()
        delivered = sample(first, "lmcache_mp_event_bus_delivered_events_total")
        for seq in range(3):
            assert _store(c, seq)
            assert 0 <= sample(scrape(port), "lmcache_mp_event_bus_queue_depth") <= 64
        wait_for(lambda: sample(scrape(port), "lmcache_mp_l1_writes_total") == 6)
        # the bus drains in batches (up to 20 ms after the first event): wait for it rather than race it
        wait_for(lambda: sample(scrape(port), "lmcache_mp_event_bus_queue_depth") == 0)
        after = scrape(port)
        # 3 x (commit + transfer) at least, none dropped
        assert sample(after, "lmcache_mp_event_bus_delivered_events_total") >= delivered + 6
        assert sample(after, "lmcache_mp_event_bus_dropped_events_total") == 0
        engine.close()
