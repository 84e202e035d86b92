"""The server container builds its coordinator client from the config and fans L2 events to it."""

from __future__ import annotations

import time

from dependency_injector import providers

from lmcache.adapters.coordinator.client import CoordinatorClient
from lmcache.adapters.coordinator.event_forwarder import CoordinatorEventForwarder
from lmcache.app.container import ServerContainer
from lmcache.app.fleet_membership import STOP_TIMEOUT_S, start_fleet_membership, stop_fleet_membership
from lmcache.domain.events import L2Stored
from lmcache.domain.keys import ObjectKey
from tests.fakes.l1_memory import FakeL1Memory
from tests.unit.config_helpers import server

FLEET = [
    "--instance-id",
    "node-7",
    "--http-port",
    "8123",
    "--coordinator-url",
    "http://127.0.0.1:9/",
    "--coordinator-advertise-ip",
    "10.1.2.3",
    "--coordinator-heartbeat-interval",
    "0.25",
    "--coordinator-l2-event-flush-interval",
    "0.5",
]


def test_no_url_no_client_and_no_forwarder() -> None:
    container = ServerContainer(config=server())
    assert container.coordinator_client() is None
    assert not any(isinstance(s, CoordinatorEventForwarder) for s in container.events().sinks)


def test_client_takes_identity_port_and_intervals_from_the_config() -> None:
    container = ServerContainer(config=server(FLEET))
    client = container.coordinator_client()
    assert isinstance(client, CoordinatorClient)
    assert (client.coordinator_url, client.instance_id, client.http_port) == (
        "http://127.0.0.1:9",
        "node-7",
        8123,
    )
    assert (client.advertise_ip, client.heartbeat_interval_s, client.flush_interval_s) == (
        "10.1.2.3",
        0.25,
        0.5,
    )
    assert client.events is None  # reporting is off by default
    assert not any(isinstance(s, CoordinatorEventForwarder) for s in container.events().sinks)


def test_event_reporting_is_a_synchronous_sink_even_without_observability() -> None:
    config = server([*FLEET, "--coordinator-l2-event-reporting", "--disable-observability"])
    container = ServerContainer(config=config)
    client = container.coordinator_client()
    assert client is not None and client.events is not None
    events = container.events()
    assert any(isinstance(s, CoordinatorEventForwarder) for s in events.sinks)
    key = ObjectKey.build(b"\x01" * 32, "m", 0, 0, "t")
    events.publish(L2Stored(0, (key,), 1, 0, 4096, (4096,)))
    assert client.events.buffered == 1  # delivered on the publishing thread, no bus involved


def test_an_unreachable_coordinator_blocks_neither_start_nor_stop() -> None:
    client = ServerContainer(config=server(FLEET)).coordinator_client()
    assert client is not None
    began = time.monotonic()
    start_fleet_membership(client)
    stop_fleet_membership(client)
    assert time.monotonic() - began < STOP_TIMEOUT_S
    assert not client.registered  # port 9 (discard) refuses: never registered
    stop_fleet_membership(None)


def _fake_memory(container: ServerContainer) -> ServerContainer:
    container.l1_memory.override(providers.Object(FakeL1Memory(1 << 20)))  # no SHM pool to leak
    return container


def test_event_reporting_exports_the_reporters_drops_on_the_server_metrics() -> None:
    container = _fake_memory(ServerContainer(config=server([*FLEET, "--coordinator-l2-event-reporting"])))
    metrics = container.metrics()
    assert metrics.registry.get_sample_value("lmcache_mp_coordinator_l2_events_dropped_total") == 0
    client = container.coordinator_client()
    assert client is not None and client.events is not None
    client.events.dropped = 7  # what the reporter counts when its buffer overflows
    assert b"lmcache_mp_coordinator_l2_events_dropped_total 7.0" in metrics.render()[0]
    plain = _fake_memory(ServerContainer(config=server(FLEET))).metrics()  # no reporting: no such metric
    assert plain.registry.get_sample_value("lmcache_mp_coordinator_l2_events_dropped_total") is None
