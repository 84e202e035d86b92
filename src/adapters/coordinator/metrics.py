"""Prometheus metrics of the coordinator, on a registry of its own (never the process-global one).

Counters are bumped by the routes and loops; gauges (instances, tracked keys, usage per salt) are read
from the fleet state at scrape time by a collector, so they cannot drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

    from lmcache.domain.fleet_state import FleetState

__all__ = ("CONTENT_TYPE", "CoordinatorMetrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    def __init__(self, state: FleetState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "lmcache_coordinator_instances", "Registered instances.", value=len(self._state.registry)
        )
        yield GaugeMetricFamily(
            "lmcache_coordinator_l2_keys", "L2 objects tracked.", value=len(self._state.directory)
        )
        usage = GaugeMetricFamily(
            "lmcache_coordinator_l2_usage_bytes", "L2 bytes tracked per cache_salt.", labels=["cache_salt"]
        )
        for salt, nbytes in sorted(self._state.directory.usage_by_salt().items()):
            usage.add_metric([salt], nbytes)
        yield usage
        yield GaugeMetricFamily(
            "lmcache_coordinator_blend_entries",
            "CacheBlend fingerprint entries.",
            value=len(self._state.blend),
        )


class CoordinatorMetrics:
    """The coordinator's counters and its scrape output."""

    def __init__(self, state: FleetState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.registrations = Counter("lmcache_coordinator_registrations", "POST /instances.", registry=r)
        self.heartbeats = Counter("lmcache_coordinator_heartbeats", "Heartbeats accepted.", registry=r)
        self.expired = Counter("lmcache_coordinator_instances_expired", "Instances timed out.", registry=r)
        self.events_applied = Counter("lmcache_coordinator_events_applied", "L2 events applied.", registry=r)
        self.batches_duplicate = Counter(
            "lmcache_coordinator_event_batches_duplicate", "Event batches ignored as duplicates.", registry=r
        )
        self.evictions_sent = Counter(
            "lmcache_coordinator_evictions_sent", "DELETE /l2 requests that succeeded.", registry=r
        )
        self.evictions_failed = Counter(
            "lmcache_coordinator_evictions_failed", "DELETE /l2 requests that failed.", registry=r
        )
        self.evicted_keys = Counter(
            "lmcache_coordinator_evicted_keys", "Keys evicted fleet-wide.", registry=r
        )
        self.resynced_keys = Counter(
            "lmcache_coordinator_resynced_keys", "Keys learnt by resync.", registry=r
        )
        self.checkpoints = Counter("lmcache_coordinator_checkpoints", "Checkpoints written.", registry=r)
        r.register(_StateCollector(state))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
