"""Wires the telemetry of `lmcache server` from its observability flags: bus, metrics and subscribers.

--disable-observability: no bus at all (the domain's events reach only the KV-event log, which is off
too) and no metrics. --disable-metrics: no Prometheus subscriber and no --prometheus-port endpoint.
--disable-logging: no logging subscriber. The lookup-hash log has its own switch (--lookup-hash-log-dir)
and tracing needs --enable-tracing; both still ride the bus, so --disable-observability turns them off.
Adapter errors are turned into `ConfigError`s naming the flag here, so the CLI exits 2 with one line;
one exception: the default --prometheus-port (9090, also Prometheus's own port) being taken is a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.adapters.telemetry.event_log import EventLogger
from lmcache.adapters.telemetry.lookup_hash_log import LookupHashLog
from lmcache.adapters.telemetry.server_metrics import ServerMetrics
from lmcache.adapters.telemetry.tracing import SpanExporterSubscriber, TracingUnavailable
from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.adapters.coordinator.client import CoordinatorClient
    from lmcache.adapters.telemetry.live_state import Countable, QueueStats, TransportStats
    from lmcache.app.config import ServerConfig
    from lmcache.app.config.observability import ObservabilityConfig
    from lmcache.domain.kv_events import KVEventLog
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.ports.events import EventSink

__all__ = ("Telemetry", "build_event_bus", "build_metrics", "build_telemetry", "event_sinks")

logger = logging.getLogger(__name__)


def _wants_bus(obs: ObservabilityConfig) -> bool:
    if obs.disable_observability:
        return False
    return (
        not obs.disable_metrics
        or not obs.disable_logging
        or bool(obs.lookup_hash_log_dir)
        or (obs.enable_tracing)
    )


def build_event_bus(obs: ObservabilityConfig) -> EventBus | None:
    """The bus, or None when observability is off or no subscriber would listen."""
    return EventBus(obs.event_bus_queue_size) if _wants_bus(obs) else None


def event_sinks(kv_events: KVEventLog, bus: EventBus | None) -> list[EventSink]:
    """Where the domain's events go: the KV-event log synchronously, then the bus (when there is one)."""
    return [kv_events] if bus is None else [kv_events, bus]


def build_metrics(
    config: ServerConfig,
    bus: EventBus | None,
    adapter_types: Sequence[str],
    l1: L1Manager,
    workers: Countable,
    sessions: Countable,
    store_queue: QueueStats,
    coordinator: CoordinatorClient | None = None,
    l2_adapters: Sequence[Any] = (),
) -> ServerMetrics:
    """The server's metrics; disabled (empty, no port) with --disable-metrics or --disable-observability.

    With `--coordinator-l2-event-reporting`, the reporter's drops are exported too.
    """
    obs = config.observability
    return ServerMetrics(
        enabled=not (obs.disable_metrics or obs.disable_observability),
        sample_rate=obs.metrics_sample_rate,
        chunk_size=config.mp.chunk_size,
        adapter_types=adapter_types,
        l1=l1,
        bus=bus,
        workers=workers,
        sessions=sessions,
        store_queue=store_queue,
        coordinator_events=coordinator.events if coordinator is not None else None,
        l2_adapters=l2_adapters,
    )


class Telemetry:
    """The running telemetry of one server: start before serving, stop after the ZMQ server stopped."""

    def __init__(self, config: ServerConfig, bus: EventBus | None, metrics: ServerMetrics) -> None:
        self.config = config
        self.bus = bus
        self.metrics = metrics

    def start(self) -> None:
        """Start the drain thread and the --prometheus-port endpoint."""
        if self.bus is not None:
            self.bus.start()
        if self.metrics.enabled:
            self._serve_metrics()

    def _serve_metrics(self) -> None:
        obs = self.config.observability
        host, port = self.config.http.http_host, obs.prometheus_port
        try:
            self.metrics.serve(host, port)
        except OSError as exc:
            problem = f"--prometheus-port: cannot bind {host}:{port} ({exc.strerror or exc})"
            if "prometheus_port" in obs.model_fields_set:
                raise ConfigError(problem) from None
            # The default 9090 is Prometheus's own port: a host running Prometheus still gets a server.
            logger.warning("%s; metrics stay available at /metrics on the HTTP port", problem)

    def watch_transport(self, transport: TransportStats | None) -> None:
        """Export the ZMQ server's request and error counters."""
        self.metrics.watch_transport(transport)

    def stop(self) -> None:
        """Close the endpoint, deliver what is queued and close the subscribers (idempotent)."""
        self.metrics.close()
        if self.bus is not None:
            self.bus.stop()


def build_telemetry(config: ServerConfig, bus: EventBus | None, metrics: ServerMetrics) -> Telemetry:
    """Subscribe the logging, lookup-hash and tracing subscribers the flags ask for (metrics is already)."""
    obs = config.observability
    if bus is not None:
        if not obs.disable_logging:
            bus.subscribe(EventLogger())
        if obs.lookup_hash_log_dir:
            bus.subscribe(_lookup_hash_log(obs))
        if obs.enable_tracing and obs.otlp_endpoint:
            try:
                bus.subscribe(SpanExporterSubscriber.for_endpoint(config.mp.instance_id, obs.otlp_endpoint))
            except TracingUnavailable as exc:
                raise ConfigError(str(exc)) from None
    return Telemetry(config, bus, metrics)


def _lookup_hash_log(obs: ObservabilityConfig) -> LookupHashLog:
    directory = Path(obs.lookup_hash_log_dir).expanduser()
    try:
        return LookupHashLog(
            directory,
            obs.lookup_hash_log_rotation_interval,
            obs.lookup_hash_log_rotation_max_size,
            obs.lookup_hash_log_max_files,
        )
    except OSError as exc:
        raise ConfigError(f"--lookup-hash-log-dir: cannot use {directory} ({exc.strerror or exc})") from None
