"""Metrics read from live server state at scrape time instead of being pushed per event.

L1 usage, queue depths, registered workers, active sessions, the ZMQ server's request and error counters
and the coordinator event reporter's drops change on every request; reading them when Prometheus scrapes
costs nothing on the data path.
The ZMQ server exists only once the runtime starts it, so it is attached later (`watch_transport`).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client.core import Metric

    from lmcache.adapters.telemetry.event_bus import EventBus
    from lmcache.domain.l1_manager import L1Manager

__all__ = ("Countable", "DropCounter", "LiveStateCollector", "QueueStats", "TransportStats")

logger = logging.getLogger(__name__)


class TransportStats(Protocol):
    """What the collector reads from the ZMQ server (its per-op Counters and the pool backlog)."""

    @property
    def requests(self) -> Mapping[str, int]:
        """Requests received, by op."""
        ...

    @property
    def errors(self) -> Mapping[str, int]:
        """Requests answered with their failure value, by op or cause."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests queued or running in the pools."""
        ...


class Countable(Protocol):
    """A table whose size is a gauge (workers, sessions)."""

    def __len__(self) -> int: ...


class QueueStats(Protocol):
    """A queue whose backlog is a gauge (the L2 store controller)."""

    @property
    def pending(self) -> int:
        """Items waiting."""
        ...


class DropCounter(Protocol):
    """A bounded buffer that drops its oldest items when full (the coordinator's L2 event reporter)."""

    @property
    def dropped(self) -> int:
        """Items dropped so far."""
        ...


def _snapshot(counts: Mapping[str, int]) -> dict[str, int]:
    """Copy a Counter another thread updates; dict() of a dict is atomic under the GIL, retry otherwise."""
    for _ in range(3):
        try:
            return dict(counts)
        except RuntimeError:  # changed size during iteration (a non-dict mapping)
            continue
    return {}


class LiveStateCollector:
    """A prometheus_client collector over the running server's objects; any of them may be None.

    Args:
        l1: The L1 store (usage, capacity, object count).
        bus: The event bus (queue depth, drops, subscriber errors); None with --disable-observability.
        workers: The worker registry (registered workers).
        sessions: The session table (active sessions).
        store_queue: The L2 store controller (keys waiting to be stored).
        coordinator_events: The coordinator's L2 event reporter (`--coordinator-l2-event-reporting`).
    """

    def __init__(
        self,
        l1: L1Manager | None = None,
        bus: EventBus | None = None,
        workers: Countable | None = None,
        sessions: Countable | None = None,
        store_queue: QueueStats | None = None,
        coordinator_events: DropCounter | None = None,
    ) -> None:
        self.l1 = l1
        self.bus = bus
        self.workers = workers
        self.sessions = sessions
        self.store_queue = store_queue
        self.coordinator_events = coordinator_events
        self.transport: TransportStats | None = None

    def watch_transport(self, transport: TransportStats | None) -> None:
        """Read request and error counts from this ZMQ server from now on (None: stop)."""
        self.transport = transport

    def describe(self) -> list[Metric]:
        """No up-front description: the registry then calls `collect` only at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        if self.l1 is not None:
            yield from self._l1(self.l1)
        if self.bus is not None:
            yield from self._bus(self.bus)
        yield from self._transport()
        yield from self._sizes()

    def _l1(self, l1: L1Manager) -> Iterator[Metric]:
        stats = l1.stats()
        yield GaugeMetricFamily("lmcache_mp_l1_usage_bytes", "Bytes of L1 in use.", stats.used_bytes)
        yield GaugeMetricFamily("lmcache_mp_l1_capacity_bytes", "Size of the L1 arena.", stats.total_bytes)
        ratio = stats.used_bytes / stats.total_bytes if stats.total_bytes else 0.0
        yield GaugeMetricFamily("lmcache_mp_l1_usage_ratio", "Share of the L1 arena in use (0-1).", ratio)
        yield GaugeMetricFamily(
            "lmcache_mp_l1_fragmentation_ratio",
            "1 - largest free run / free bytes of the L1 arena.",
            stats.fragmentation,
        )
        yield GaugeMetricFamily(
            "lmcache_mp_l1_objects", "Objects in L1, write reservations included.", l1.object_count
        )

    def _bus(self, bus: EventBus) -> Iterator[Metric]:
        yield GaugeMetricFamily("lmcache_mp_event_bus_queue_depth", "Events waiting for delivery.", bus.depth)
        yield GaugeMetricFamily(
            "lmcache_mp_event_bus_queue_capacity", "Events the bus queues at most.", bus.capacity
        )
        yield CounterMetricFamily(
            "lmcache_mp_event_bus_dropped_events", "Events dropped because the queue was full.", bus.dropped
        )
        yield CounterMetricFamily(
            "lmcache_mp_event_bus_delivered_events", "Events handed to the subscribers.", bus.delivered
        )
        errors = CounterMetricFamily(
            "lmcache_mp_event_subscriber_errors", "Events a subscriber failed on.", labels=["subscriber"]
        )
        counts = collections.Counter({s.name: 0 for s in bus.subscribers})
        counts.update(_snapshot(bus.subscriber_errors))
        for name, value in sorted(counts.items()):
            errors.add_metric([name], value)
        yield errors

    def _transport(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("lmcache_mp_requests", "ZMQ requests received, by op.", labels=["op"])
        errors = CounterMetricFamily(
            "lmcache_mp_request_errors",
            "ZMQ requests answered with their failure value, by op (or malformed / unknown_op / overloaded).",
            labels=["op"],
        )
        transport = self.transport
        in_flight = 0
        if transport is not None:
            for op, value in sorted(_snapshot(transport.requests).items()):
                requests.add_metric([op], value)
            for op, value in sorted(_snapshot(transport.errors).items()):
                errors.add_metric([op], value)
            in_flight = transport.in_flight
        yield requests
        yield errors
        yield GaugeMetricFamily(
            "lmcache_mp_requests_in_flight", "ZMQ requests queued or running in the worker pools.", in_flight
        )

    def _sizes(self) -> Iterator[Metric]:
        if self.workers is not None:
            yield GaugeMetricFamily(
                "lmcache_mp_workers_registered", "Registered engine workers.", len(self.workers)
            )
        if self.sessions is not None:
            yield GaugeMetricFamily(
                "lmcache_mp_sessions_active", "Open request sessions.", len(self.sessions)
            )
        if self.store_queue is not None:
            yield GaugeMetricFamily(
                "lmcache_mp_l2_store_queue_depth",
                "Objects waiting to be stored to L2.",
                self.store_queue.pending,
            )
        if self.coordinator_events is not None:
            yield CounterMetricFamily(
                "lmcache_mp_coordinator_l2_events_dropped",
                "L2 events for the coordinator dropped (oldest first) because its buffer was full.",
                self.coordinator_events.dropped,
            )
