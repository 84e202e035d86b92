"""The server-side client against a real coordinator process: restart, re-registration, never blocking."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from lmcache.adapters.coordinator.client import CoordinatorClient, outbound_ip
from lmcache.adapters.coordinator.l2_events import L2EventReporter
from tests.integration.coordinator.conftest import free_port, make_key, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.coordinator.conftest import CoordinatorProcess


def test_client_re_registers_after_a_coordinator_restart_and_never_blocks(
    coordinator: Callable[..., CoordinatorProcess],
) -> None:
    port = free_port()
    coord = coordinator(port=port)
    client = CoordinatorClient(
        coord.url,
        "node-7",
        8080,
        heartbeat_interval_s=0.1,
        l2_event_reporting=True,
        l2_event_flush_interval_s=0.05,
        request_timeout_s=0.5,
    )
    started = time.perf_counter()
    client.start()
    assert time.perf_counter() - started < 0.5
    try:
        assert client.events is not None
        wait_until(lambda: client.registered)
        [record] = coord.get("/instances")["instances"]
        assert record["instance_id"] == "node-7" and record["http_port"] == 8080
        assert record["ip"] == outbound_ip(coord.url) == "127.0.0.1"
        client.events.record_store(make_key(1), 100)
        wait_until(lambda: coord.get("/directory/stats")["l2_size_bytes"] == 100)

        assert coord.stop(signal.SIGTERM) == 0
        started = time.perf_counter()
        for i in range(2, 2002):  # the coordinator is down: recording stays a buffer append
            client.events.record_store(make_key(i), 10)
        assert time.perf_counter() - started < 0.5
        time.sleep(0.5)  # heartbeats fail meanwhile; nothing raises in the caller

        coord = coordinator(port=port)
        wait_until(lambda: [i["instance_id"] for i in coord.get("/instances")["instances"]] == ["node-7"])
        assert client.registrations >= 2
        wait_until(lambda: coord.get("/directory/stats")["l2_size_bytes"] == 2000 * 10)  # buffered events
        assert client.events.dropped == 0
    finally:
        client.stop(timeout_s=5)
    assert coord.get("/instances") == {"instances": []}


def test_client_against_a_dead_coordinator_stops_quickly_and_drops_the_oldest_events() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = CoordinatorClient(
        url,
        "x",
        1,
        heartbeat_interval_s=0.05,
        l2_event_reporting=True,
        max_buffered_events=10,
        request_timeout_s=0.2,
    )
    client.start()
    assert client.events is not None
    for i in range(25):
        client.events.record_lookup(make_key(i))
    assert client.events.dropped == 15 and client.events.buffered == 10
    time.sleep(0.3)
    assert not client.registered
    started = time.perf_counter()
    client.stop(timeout_s=5)
    assert time.perf_counter() - started < 2


def test_reporter_numbers_batches_and_splits_them() -> None:
    reporter = L2EventReporter("a", max_buffered=100, max_batch=3)
    for i in range(7):
        reporter.record_delete(make_key(i))
    first = reporter._take_batch()
    assert first is not None and first["seq"] == 1 and len(first["events"]) == 3
    assert reporter._take_batch() is first  # kept until delivered
    reporter._pending = None
    second = reporter._take_batch()
    assert second is not None and second["seq"] == 2
    assert second["events"][0] == {"type": "delete", "key": second["events"][0]["key"], "bytes": 0}
