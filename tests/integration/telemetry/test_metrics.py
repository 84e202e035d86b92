"""Prometheus metrics of a running server: counters move by what the requests did; the flags turn it off."""

from __future__ import annotations

import urllib.error

import pytest

from lmcache.domain.units import gb_to_bytes
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

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 32 blocks of 16


def test_counters_move_by_what_the_requests_did() -> None:
    port, http_port = free_port(), free_port()
    with run_server(*port_flags(port, http_port), "--metrics-sample-rate", "1") as srv:
        before = scrape(port)
        assert sample(before, "lmcache_mp_store_requests_total") == 0
        assert sample(before, "lmcache_mp_l1_usage_bytes") == 0
        assert sample(before, "lmcache_mp_l1_capacity_bytes") == pytest.approx(gb_to_bytes(0.05), rel=0.01)
        assert sample(before, "lmcache_mp_event_bus_queue_capacity") == 10000
        with srv.client() as c:
            engine = Engine(c)
            engine.register()
            tokens = tokens_for(1)
            assert hit_chunks(c, tokens, "cold") == 0
            assert c.store(key(tokens, "cold", end=512), 1000, [BLOCKS], b"")[1]
            c.end_session("cold")
            assert hit_chunks(c, tokens, "warm") == 2
            assert c.retrieve(key(tokens, "warm", end=512), 1000, [BLOCKS], b"", 0)[1]
            # not chunk-aligned: refused with the failure value, counted as an error of its op
            assert not c.retrieve(key(tokens, "bad", start=5, end=512), 1000, [BLOCKS], b"", 0)[1]
            engine.close()

            def settled() -> bool:
                now = scrape(port)
                return (
                    sample(now, "lmcache_mp_retrieve_requests_total") == 2
                    and sample(now, "lmcache_mp_lookup_requests_total") == 2
                )

            wait_for(settled)
            after = scrape(port)
            via_http = scrape(http_port)  # GET /metrics of the HTTP frontend renders the same registry

    two_chunks = 2 * CHUNK_BYTES
    expected = {
        ("lmcache_mp_store_requests_total", ()): 1,
        ("lmcache_mp_store_failures_total", ()): 0,
        ("lmcache_mp_store_tokens_total", ()): 512,
        ("lmcache_mp_store_bytes_total", ()): two_chunks,
        ("lmcache_mp_store_duration_seconds_count", ()): 1,  # --metrics-sample-rate 1: every request
        ("lmcache_mp_store_size_bytes_sum", ()): two_chunks,
        ("lmcache_mp_retrieve_requests_total", ()): 2,
        ("lmcache_mp_retrieve_failures_total", ()): 1,
        ("lmcache_mp_retrieve_tokens_total", ()): 512,
        ("lmcache_mp_retrieve_bytes_total", ()): two_chunks,
        ("lmcache_mp_lookup_requests_total", ()): 2,
        ("lmcache_mp_lookup_requested_tokens_total", ()): 1024,
        ("lmcache_mp_lookup_hit_tokens_total", (("tier", "l1"),)): 512,
        ("lmcache_mp_lookup_hit_tokens_total", (("tier", "l2"),)): 0,
        ("lmcache_mp_l1_writes_total", ()): 2,
        ("lmcache_mp_l1_write_bytes_total", ()): two_chunks,
        ("lmcache_mp_l1_reads_total", ()): 4,  # two lookups of two chunks
        ("lmcache_mp_l1_read_hits_total", ()): 2,
        ("lmcache_mp_l1_usage_bytes", ()): two_chunks,
        ("lmcache_mp_requests_total", (("op", "store"),)): 1,
        ("lmcache_mp_requests_total", (("op", "lookup"),)): 2,
        ("lmcache_mp_requests_total", (("op", "retrieve"),)): 2,
        ("lmcache_mp_request_errors_total", (("op", "retrieve"),)): 1,
        ("lmcache_mp_request_errors_total", (("op", "store"),)): 0,
        ("lmcache_mp_workers_registered", ()): 1,
        ("lmcache_mp_event_bus_dropped_events_total", ()): 0,
        ("lmcache_mp_event_subscriber_errors_total", (("subscriber", "metrics"),)): 0,
    }
    got = {(name, labels): sample(after, name, **dict(labels)) for name, labels in expected}
    assert got == expected
    assert {k: sample(via_http, k[0], **dict(k[1])) for k in expected} == expected
    ratio = sample(after, "lmcache_mp_l1_usage_ratio")
    assert ratio == pytest.approx(two_chunks / sample(after, "lmcache_mp_l1_capacity_bytes"))


def test_reaped_workers_are_counted() -> None:
    port = free_port()
    reap = ["--worker-reap-timeout-seconds", "0.2", "--worker-registration-grace-seconds", "0.2"]
    with run_server(*port_flags(port), *reap) as srv, srv.client() as c:
        assert sample(scrape(port), "lmcache_mp_workers_reaped_total") == 0
        engine = Engine(c)
        engine.register()
        wait_for(lambda: sample(scrape(port), "lmcache_mp_workers_reaped_total") == 1)
        assert sample(scrape(port), "lmcache_mp_workers_registered") == 0
        engine.close()


@pytest.mark.parametrize("flag", ["--disable-metrics", "--disable-observability"])
def test_metrics_off_leaves_the_port_closed(flag: str) -> None:
    port = free_port()
    with run_server(*port_flags(port), flag) as srv:
        with srv.client() as c:
            assert c.noop() == "OK"
        with pytest.raises(urllib.error.URLError):
            scrape(port)
