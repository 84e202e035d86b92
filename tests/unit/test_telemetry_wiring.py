"""The container wires telemetry from the observability flags; the domain's events reach the bus."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from dependency_injector import providers

from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.app.config import ConfigError
from lmcache.app.container import ServerContainer
from lmcache.domain.cache_engine import RequestKey
from lmcache.domain.events import LookupPerformed
from lmcache.domain.kv_events import KVEventLog
from tests.fakes.events import RecordingEventSink
from tests.fakes.l1_memory import FakeL1Memory
from tests.unit.config_helpers import server

if TYPE_CHECKING:
    from pathlib import Path


def container(*argv: str) -> ServerContainer:
    c = ServerContainer(config=server(list(argv)))
    c.l1_memory.override(providers.Object(FakeL1Memory(1 << 20)))
    return c


def subscriber_names(c: ServerContainer) -> list[str]:
    telemetry = c.telemetry()
    return [] if telemetry.bus is None else [s.name for s in telemetry.bus.subscribers]


def test_defaults_metrics_and_logging_on_the_bus() -> None:
    c = container()
    assert subscriber_names(c) == ["metrics", "logging"]
    assert c.metrics().enabled
    sinks = c.events().sinks
    assert isinstance(sinks[0], KVEventLog)  # the KV-event log still gets every event synchronously
    assert sinks[1] is c.event_bus()


def test_disable_observability_means_no_bus_and_no_metrics() -> None:
    c = container("--disable-observability", "--lookup-hash-log-dir", "/nonexistent/never-created")
    assert c.event_bus() is None
    assert [type(s) for s in c.events().sinks] == [KVEventLog]
    assert not c.metrics().enabled
    assert subscriber_names(c) == []


def test_disable_metrics_and_logging(tmp_path: Path) -> None:
    c = container("--disable-metrics")
    assert subscriber_names(c) == ["logging"]
    assert c.metrics().render()[0] == b""
    c = container("--disable-logging")
    assert subscriber_names(c) == ["metrics"]
    c = container("--disable-metrics", "--disable-logging")
    assert c.event_bus() is None  # nobody would listen
    c = container("--disable-metrics", "--disable-logging", "--lookup-hash-log-dir", str(tmp_path / "h"))
    assert subscriber_names(c) == ["lookup_hash_log"]
    assert (tmp_path / "h").is_dir()


def test_queue_size_flag() -> None:
    bus = container("--event-bus-queue-size", "7").event_bus()
    assert isinstance(bus, EventBus)
    assert bus.capacity == 7


def test_unusable_hash_log_dir_names_the_flag(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = container("--lookup-hash-log-dir", str(blocker / "sub"))
    with pytest.raises(ConfigError, match="--lookup-hash-log-dir"):
        c.telemetry()


def test_busy_prometheus_port_names_the_flag() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c = container("--http-host", "127.0.0.1", "--prometheus-port", str(port))
        telemetry = c.telemetry()
        with pytest.raises(ConfigError, match="--prometheus-port"):
            telemetry.start()
        telemetry.stop()


def test_busy_default_prometheus_port_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    import contextlib
    import socket

    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken by someone else: just as busy
            taken.bind(("127.0.0.1", 9090))
            taken.listen()
        telemetry = container("--http-host", "127.0.0.1").telemetry()
        with caplog.at_level(logging.WARNING, logger="lmcache.app.telemetry"):
            telemetry.start()
        telemetry.stop()
    assert telemetry.metrics.port is None
    assert "--prometheus-port: cannot bind 127.0.0.1:9090" in caplog.text


def test_engine_lookup_reaches_the_bus_and_the_metrics() -> None:
    c = container()
    bus = c.event_bus()
    assert bus is not None
    registry = c.metrics().registry  # subscribes before the first event is delivered, as at start-up
    recorder = RecordingEventSink()
    c.events().sinks.append(recorder)
    tokens = list(range(600))
    c.engine().lookup(RequestKey("m", 1, None, tokens, 0, 600, "req-1", "", 1))
    bus.drain()
    assert registry.get_sample_value("lmcache_mp_lookup_requests_total") == 1
    assert registry.get_sample_value("lmcache_mp_lookup_requested_tokens_total") == 600
    (event,) = recorder.of_type(LookupPerformed)
    # no worker registered for "m": the lookup answers 0 without hashing, so it carries no hashes
    assert (event.request_id, event.model_name, event.seq_len, event.chunk_hashes) == ("req-1", "m", 600, ())
