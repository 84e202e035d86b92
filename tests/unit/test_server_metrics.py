"""Prometheus metrics: event counters, sampled histograms, live gauges, the own registry, disabled mode."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.adapters.telemetry.server_metrics import ServerMetrics
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.events import (
    AllocationFailed,
    EvictionReason,
    L1Read,
    L1Removed,
    L1WriteAborted,
    L1WriteCommitted,
    L2Loaded,
    L2Stored,
    L2StoreDropped,
    LookupPerformed,
    PrefetchCompleted,
    TransferCompleted,
    TransferKind,
    WorkerReaped,
)
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.keys import ObjectKey
from lmcache.domain.l1_manager import L1Manager
from tests.fakes.clock import FakeClock

KEY = ObjectKey(b"\x01" * 32, "m", 0, 0, "tenant-a")
MB = 1 << 20


@dataclass
class FakeTransport:
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    in_flight: int = 0


def metrics_with(bus: EventBus, l1: L1Manager | None = None, sample_rate: float = 1.0) -> ServerMetrics:
    return ServerMetrics(True, sample_rate, 256, ["fs", "mock"], l1=l1, bus=bus, workers=[1, 2], sessions=[])


def value(m: ServerMetrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    assert got is not None, f"{name}{labels} missing"
    return got


def test_event_counters() -> None:
    bus = EventBus(100)
    m = metrics_with(bus)
    keys = (KEY, KEY)
    for event in (
        L1WriteCommitted(keys, 2 * MB),
        L1WriteAborted((KEY,), expired=True),
        L1Read(10, 7),
        L1Removed(keys, 2 * MB, EvictionReason.WATERMARK),
        L1Removed((KEY,), MB, EvictionReason.CLEAR),
        AllocationFailed(KEY, MB),
        L2Stored(1, keys, 1, 1, MB),
        L2Loaded(0, KEY, True, MB),
        L2Loaded(0, KEY, False, 0),
        L2StoreDropped(5),
        LookupPerformed("r", "m", 256, 1000, (b"a", b"b", b"c"), 0.001),
        PrefetchCompleted(3, 3, 2, 1, 1),
        WorkerReaped(3, "m"),
    ):
        bus.publish(event)
    bus.drain()
    assert value(m, "lmcache_mp_l1_writes_total") == 2
    assert value(m, "lmcache_mp_l1_write_bytes_total") == 2 * MB
    assert value(m, "lmcache_mp_l1_write_aborts_total", reason="expired") == 1
    assert value(m, "lmcache_mp_l1_write_aborts_total", reason="aborted") == 0
    assert value(m, "lmcache_mp_l1_reads_total") == 10
    assert value(m, "lmcache_mp_l1_read_hits_total") == 7
    assert value(m, "lmcache_mp_l1_evictions_total", reason="watermark") == 2
    assert value(m, "lmcache_mp_l1_evicted_bytes_total", reason="clear") == MB
    assert value(m, "lmcache_mp_l1_evictions_total", reason="on_demand") == 0
    assert value(m, "lmcache_mp_l1_allocation_failures_total") == 1
    assert value(m, "lmcache_mp_l2_stored_objects_total", adapter="1", type="mock") == 1
    assert value(m, "lmcache_mp_l2_store_failures_total", adapter="1", type="mock") == 1
    assert value(m, "lmcache_mp_l2_stored_bytes_total", adapter="1", type="mock") == MB
    assert value(m, "lmcache_mp_l2_stored_objects_total", adapter="0", type="fs") == 0
    assert value(m, "lmcache_mp_l2_loaded_objects_total", adapter="0", type="fs") == 1
    assert value(m, "lmcache_mp_l2_load_failures_total", adapter="0", type="fs") == 1
    assert value(m, "lmcache_mp_l2_loaded_bytes_total", adapter="0", type="fs") == MB
    assert value(m, "lmcache_mp_l2_store_dropped_objects_total") == 5
    assert value(m, "lmcache_mp_lookup_requests_total") == 1
    assert value(m, "lmcache_mp_lookup_requested_tokens_total") == 1000
    # 3 chunks of 256 tokens, objects from L1:L2 = 2:1
    assert value(m, "lmcache_mp_lookup_hit_tokens_total", tier="l1") == 512
    assert value(m, "lmcache_mp_lookup_hit_tokens_total", tier="l2") == 256
    assert value(m, "lmcache_mp_prefetch_l2_errors_total") == 1
    assert value(m, "lmcache_mp_workers_reaped_total") == 1


def test_transfer_counters_count_everything_histograms_are_sampled() -> None:
    bus = EventBus(100)
    m = metrics_with(bus, sample_rate=0.5)
    assert m.events is not None
    draws = iter([0.1, 0.9, 0.2, 0.7])  # two of four requests fall under the 0.5 sample rate
    m.events._rng = lambda: next(draws)
    for ok in (True, True, False, True):
        bus.publish(
            TransferCompleted(TransferKind.STORE, "r", "m", 512 if ok else 0, MB if ok else 0, 0.002, ok)
        )
    bus.drain()
    m.events.sample_rate = 0.0  # the retrieve is not sampled at all
    bus.publish(TransferCompleted(TransferKind.RETRIEVE, "r", "m", 256, MB // 2, 0.001, True))
    bus.drain()
    assert value(m, "lmcache_mp_store_requests_total") == 4
    assert value(m, "lmcache_mp_store_failures_total") == 1
    assert value(m, "lmcache_mp_store_tokens_total") == 3 * 512
    assert value(m, "lmcache_mp_store_bytes_total") == 3 * MB
    assert value(m, "lmcache_mp_store_duration_seconds_count") == 2
    assert value(m, "lmcache_mp_store_size_bytes_count") == 2
    assert value(m, "lmcache_mp_store_size_bytes_sum") == MB  # draws 0.1 (1 MiB) and 0.2 (failed: 0)
    assert value(m, "lmcache_mp_retrieve_requests_total") == 1
    assert value(m, "lmcache_mp_retrieve_bytes_total") == MB // 2
    assert value(m, "lmcache_mp_retrieve_duration_seconds_count") == 0


def test_live_gauges_read_state_at_scrape_time() -> None:
    bus = EventBus(3)
    l1 = L1Manager(ArenaAllocator(64 * MB, 4096), LruPolicy(), FakeClock())
    m = metrics_with(bus, l1)
    transport = FakeTransport()
    m.watch_transport(transport)
    assert value(m, "lmcache_mp_l1_usage_bytes") == 0
    assert value(m, "lmcache_mp_l1_capacity_bytes") == 64 * MB
    l1.reserve([KEY], 16 * MB)
    l1.finish([KEY])
    assert value(m, "lmcache_mp_l1_usage_bytes") == 16 * MB
    assert value(m, "lmcache_mp_l1_usage_ratio") == 0.25
    assert value(m, "lmcache_mp_l1_objects") == 1
    for i in range(5):
        bus.publish(L1Read(i, 0))
    assert value(m, "lmcache_mp_event_bus_queue_depth") == 3
    assert value(m, "lmcache_mp_event_bus_queue_capacity") == 3
    assert value(m, "lmcache_mp_event_bus_dropped_events_total") == 2
    assert value(m, "lmcache_mp_event_subscriber_errors_total", subscriber="metrics") == 0
    transport.requests.update({"store": 3, "lookup": 2})
    transport.errors.update({"store": 1, "malformed": 4})
    transport.in_flight = 2
    assert value(m, "lmcache_mp_requests_total", op="store") == 3
    assert value(m, "lmcache_mp_request_errors_total", op="store") == 1
    assert value(m, "lmcache_mp_request_errors_total", op="malformed") == 4
    assert value(m, "lmcache_mp_requests_in_flight") == 2
    assert value(m, "lmcache_mp_workers_registered") == 2
    assert value(m, "lmcache_mp_sessions_active") == 0


def test_render_is_prometheus_text_of_the_own_registry_only() -> None:
    m = metrics_with(EventBus(10))
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "lmcache_mp_l1_writes" in names  # the parser strips _total from counter family names
    assert all(name.startswith("lmcache_mp_") for name in names)
    assert b"process_cpu_seconds_total" not in body
    assert prometheus_client.REGISTRY.get_sample_value("lmcache_mp_l1_writes_total") is None


def test_disabled_metrics_register_nothing_and_serve_no_port() -> None:
    bus = EventBus(10)
    m = ServerMetrics(False, 1.0, 256, bus=bus)
    assert m.render()[0] == b""
    assert bus.subscribers == ()
    m.serve("127.0.0.1", 1)  # would fail to bind if it tried
    assert m.port is None


def test_serve_and_close_the_standalone_endpoint() -> None:
    import urllib.request

    m = metrics_with(EventBus(10))
    m.serve("127.0.0.1", 0)
    port = m.port
    assert port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"lmcache_mp_l1_writes_total 0.0" in response.read()
    finally:
        m.close()
    assert m.port is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_coordinator_event_drops_are_a_counter_read_at_scrape_time() -> None:
    from lmcache.adapters.coordinator.l2_events import L2EventReporter

    reporter = L2EventReporter("inst", max_buffered=2)
    m = ServerMetrics(True, 1.0, 256, coordinator_events=reporter)
    assert value(m, "lmcache_mp_coordinator_l2_events_dropped_total") == 0
    for i in range(5):
        reporter.record_store(ObjectKey(bytes([i]) * 32, "m", 0, 0, ""), 10)
    assert (
        value(m, "lmcache_mp_coordinator_l2_events_dropped_total") == 3
    )  # the 3 oldest of 5 in a buffer of 2
    assert b"lmcache_mp_coordinator_l2_events_dropped_total 3.0" in m.render()[0]
    without = ServerMetrics(True, 1.0, 256)  # no event reporting: no such metric
    assert without.registry.get_sample_value("lmcache_mp_coordinator_l2_events_dropped_total") is None


def test_l2_breaker_states_are_exported_per_adapter() -> None:
    from collections import Counter
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from lmcache.adapters.telemetry.l2_breakers import L2BreakerCollector

    def adapter(state: str, **moves: int) -> SimpleNamespace:
        return SimpleNamespace(breaker=SimpleNamespace(state=state, transitions=Counter(moves)))

    registry = CollectorRegistry()
    adapters = [adapter("closed"), adapter("open", open=2, half_open=1), SimpleNamespace()]
    registry.register(L2BreakerCollector(adapters, ["fs", "resp", "mock"]))
    text = generate_latest(registry).decode()
    assert 'lmcache_mp_l2_circuit_breaker_state{adapter="0",type="fs"} 0.0' in text
    assert 'lmcache_mp_l2_circuit_breaker_state{adapter="1",type="resp"} 2.0' in text
    assert 'lmcache_mp_l2_circuit_breaker_transitions_total{adapter="1",state="open",type="resp"} 2.0' in text
    assert 'type="mock"' not in text  # no breaker, nothing exported
