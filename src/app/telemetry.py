"""Which telemetry the observability flags ask for, and the running telemetry's start and stop.

--disable-observability: no bus at all (the domain's events reach only the KV-event log, which is off
too) and no metrics. --disable-metrics: no Prometheus subscriber and no --prometheus-port endpoint.
--disable-logging: no logging subscriber. The lookup-hash log has its own switch (--lookup-hash-log-dir)
and tracing needs --enable-tracing; both still ride the bus, so --disable-observability turns them off.
The rules are the predicates below (`inert_flags.py` reads them too); the container (`container.py`,
`storage_container.py`) builds what they select, and `Telemetry` subscribes it and runs it. One exception
to start-up errors exiting 2: the default --prometheus-port (9090, also Prometheus's own port) being
taken is a warning.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lmcache.adapters.telemetry.event_bus import EventBus, Subscriber
    from lmcache.adapters.telemetry.live_state import TransportStats
    from lmcache.adapters.telemetry.server_metrics import ServerMetrics
    from lmcache.app.config import ServerConfig
    from lmcache.app.config.observability import ObservabilityConfig

__all__ = (
    "Telemetry",
    "wants_bus",
    "wants_logging",
    "wants_lookup_hash_log",
    "wants_metrics",
    "wants_tracing",
)

logger = logging.getLogger(__name__)


def wants_bus(obs: ObservabilityConfig) -> bool:
    """Whether any subscriber would listen (else no bus is built)."""
    if obs.disable_observability:
        return False
    return (
        not obs.disable_metrics
        or not obs.disable_logging
        or bool(obs.lookup_hash_log_dir)
        or obs.enable_tracing
    )


def wants_metrics(obs: ObservabilityConfig) -> bool:
    """Whether the server's metrics are on (else empty, and no --prometheus-port)."""
    return not (obs.disable_metrics or obs.disable_observability)


def wants_logging(obs: ObservabilityConfig) -> bool:
    """Whether events are logged (a bus subscriber)."""
    return not obs.disable_observability and not obs.disable_logging


def wants_lookup_hash_log(obs: ObservabilityConfig) -> bool:
    """Whether lookups' chunk hashes go to --lookup-hash-log-dir (a bus subscriber)."""
    return not obs.disable_observability and bool(obs.lookup_hash_log_dir)


def wants_tracing(obs: ObservabilityConfig) -> bool:
    """Whether spans are exported to --otlp-endpoint (a bus subscriber)."""
    return not obs.disable_observability and obs.enable_tracing and bool(obs.otlp_endpoint)


class Telemetry:
    """The running telemetry of one server: start before serving, stop after the ZMQ server stopped.

    Args:
        config: The server's configuration (--http-host and --prometheus-port).
        bus: The event bus, or None when no subscriber would listen.
        metrics: The server's metrics (subscribed to the bus already when on).
        subscribers: The other subscribers the flags ask for, subscribed here in order; None entries
            (not asked for) are skipped.
    """

    def __init__(
        self,
        config: ServerConfig,
        bus: EventBus | None,
        metrics: ServerMetrics,
        subscribers: Iterable[Subscriber | None] = (),
    ) -> None:
        self.config = config
        self.bus = bus
        self.metrics = metrics
        if bus is not None:
            for subscriber in subscribers:
                if subscriber is not None:
                    bus.subscribe(subscriber)

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
