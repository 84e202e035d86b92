"""Tracing: spans for store, retrieve and lookup with the request's times and service.instance.id."""

from __future__ import annotations

import sys

import pytest
from dependency_injector import providers
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.adapters.telemetry.server_metrics import ServerMetrics
from lmcache.adapters.telemetry.tracing import SpanExporterSubscriber, TracingUnavailable
from lmcache.app.config import ConfigError
from lmcache.app.container import ServerContainer
from lmcache.domain.events import L1Read, LookupPerformed, TransferCompleted, TransferKind
from tests.unit.config_helpers import server

TRACING = ["--enable-tracing", "--otlp-endpoint", "http://127.0.0.1:4317", "--instance-id", "node-9"]
OFF = ServerMetrics(False, 0.0, 256)


def _container(argv: list[str]) -> ServerContainer:
    container = ServerContainer(config=server(argv))
    container.metrics.override(providers.Object(OFF))
    return container


def test_spans_for_store_retrieve_and_lookup() -> None:
    exporter = InMemorySpanExporter()
    bus = EventBus(10, wall=lambda: 1000.0)
    bus.subscribe(SpanExporterSubscriber("node-7", exporter, batch=False))
    bus.publish(TransferCompleted(TransferKind.STORE, "r1", "m", 512, 1 << 20, 0.25, True))
    bus.publish(TransferCompleted(TransferKind.RETRIEVE, "r1", "m", 0, 0, 0.5, False))
    bus.publish(LookupPerformed("r2", "m", 256, 600, (b"a", b"b"), 0.125))
    bus.publish(L1Read(1, 1))  # not traced
    bus.drain()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["lmcache.lookup", "lmcache.retrieve", "lmcache.store"]
    store = spans["lmcache.store"]
    assert store.resource.attributes["service.instance.id"] == "node-7"
    assert store.end_time == 1000 * 10**9
    assert store.end_time - store.start_time == 250_000_000
    assert store.attributes is not None
    assert store.attributes["lmcache.request_id"] == "r1"
    assert store.attributes["lmcache.tokens"] == 512
    assert store.status.status_code == StatusCode.UNSET
    assert spans["lmcache.retrieve"].status.status_code == StatusCode.ERROR
    lookup = spans["lmcache.lookup"]
    assert lookup.attributes is not None
    assert lookup.attributes["lmcache.chunks"] == 2
    assert lookup.attributes["lmcache.seq_len"] == 600
    bus.stop()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(TracingUnavailable, match=r"pip install 'lmcache\[otel\]'"):
        SpanExporterSubscriber.for_endpoint("x", "http://127.0.0.1:4317")
    with pytest.raises(ConfigError, match=r"--enable-tracing needs the optional package .*lmcache\[otel\]"):
        _container(TRACING).telemetry()


def test_tracing_subscriber_is_wired_from_the_flags() -> None:
    container = _container(TRACING)
    bus = container.event_bus()
    assert bus is not None
    telemetry = container.telemetry()
    assert [s.name for s in bus.subscribers] == ["logging", "tracing"]
    tracer = bus.subscribers[1]
    assert isinstance(tracer, SpanExporterSubscriber)
    assert tracer.provider.resource.attributes["service.instance.id"] == "node-9"
    assert telemetry.bus is bus
    bus.stop()
