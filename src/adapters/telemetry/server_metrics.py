"""The server's Prometheus metrics: its own registry, rendered for `GET /metrics` and on --prometheus-port.

Never the process-global registry: two servers in one process (tests) must not share samples, and the
default process/GC collectors of prometheus_client are not part of the lmcache_mp_ namespace.
Disabled (--disable-metrics or --disable-observability) it registers nothing and serves no port;
`render` then answers an empty exposition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server

from lmcache.adapters.telemetry.event_metrics import EventMetrics
from lmcache.adapters.telemetry.l2_breakers import L2BreakerCollector
from lmcache.adapters.telemetry.l2_state import L2ServicesCollector
from lmcache.adapters.telemetry.live_state import LiveStateCollector

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence
    from wsgiref.simple_server import WSGIServer

    from lmcache.adapters.telemetry.event_bus import EventBus
    from lmcache.adapters.telemetry.live_state import Countable, DropCounter, QueueStats, TransportStats
    from lmcache.domain.l1_manager import L1Manager

__all__ = ("ServerMetrics",)

logger = logging.getLogger(__name__)


class ServerMetrics:
    """Registry, event counters and live gauges of one server.

    Args:
        enabled: False: nothing is registered or served.
        sample_rate: `--metrics-sample-rate`.
        chunk_size: `--chunk-size` (lookup hits in tokens).
        adapter_types: L2 adapter types in cascade order.
        l1: The L1 store.
        bus: The event bus (None when observability is off: no event counters then).
        workers: The worker registry.
        sessions: The session table.
        store_queue: The L2 store controller.
        coordinator_events: The coordinator's L2 event reporter (None without event reporting).
        l2_adapters: The L2 cascade (breaker states, eviction and serde numbers are read from it at scrape
            time).
    """

    def __init__(
        self,
        enabled: bool,
        sample_rate: float,
        chunk_size: int,
        adapter_types: Sequence[str] = (),
        l1: L1Manager | None = None,
        bus: EventBus | None = None,
        workers: Countable | None = None,
        sessions: Countable | None = None,
        store_queue: QueueStats | None = None,
        coordinator_events: DropCounter | None = None,
        l2_adapters: Sequence[Any] = (),
    ) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self.events: EventMetrics | None = None
        self.live: LiveStateCollector | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        self.live = LiveStateCollector(l1, bus, workers, sessions, store_queue, coordinator_events)
        self.registry.register(self.live)
        if l2_adapters:
            self.registry.register(L2BreakerCollector(l2_adapters, adapter_types))
            self.registry.register(L2ServicesCollector(l2_adapters, adapter_types))
        if bus is not None:
            self.events = EventMetrics(self.registry, sample_rate, chunk_size, adapter_types)
            bus.subscribe(self.events)

    def watch_transport(self, transport: TransportStats | None) -> None:
        """Export this ZMQ server's request and error counters (read at scrape time)."""
        if self.live is not None:
            self.live.watch_transport(transport)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        if not self.enabled:
            return b"", CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -------------------------------------------------------- --prometheus-port
    @property
    def port(self) -> int | None:
        """The port the standalone endpoint listens on, while it runs."""
        return None if self._server is None else int(self._server.server_port)

    def serve(self, host: str, port: int) -> None:
        """Serve `/metrics` on `host:port` from a daemon thread; raises OSError when it cannot bind."""
        if not self.enabled or self._server is not None:
            return
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        """Stop the standalone endpoint (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
