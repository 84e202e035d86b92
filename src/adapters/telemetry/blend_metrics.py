"""Prometheus metrics of CacheBlend (an event-bus subscriber plus gauges read at scrape time).

Counters: lookups by match source, matches by outcome (found / partial / stale / returned, and chunks
riding the segmented prefix), re-rotated and scattered bytes, scatters and failed scatters; histograms:
lookup and scatter time. Gauges: fingerprint index entries, lookups in flight, stashed sparse locks.
Labels are bounded sets only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from lmcache.domain.blend_events import BlendLookupFinished, BlendScattered

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

__all__ = ("BlendMetrics",)

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class BlendMetrics:
    """Subscriber of `BlendLookupFinished` and `BlendScattered`.

    Args:
        registry: The server's registry.
        gauges: Name suffix -> (help, callable) of live values (index entries, lookups in flight, locks).
    """

    name = "blend_metrics"
    kinds: tuple[type, ...] = (BlendLookupFinished, BlendScattered)

    def __init__(
        self, registry: CollectorRegistry, gauges: dict[str, tuple[str, Callable[[], float]]]
    ) -> None:
        self.lookups = Counter(
            "lmcache_mp_cb_lookups",
            "cb_unified_lookup answers, by match source.",
            ["source"],
            registry=registry,
        )
        self.matches = Counter(
            "lmcache_mp_cb_matches",
            "CacheBlend candidate chunks by outcome: found, partial, stale (struck), returned (after overlap "
            "resolution), segmented (riding the segmented prefix).",
            ["outcome"],
            registry=registry,
        )
        self.lookup_duration = Histogram(
            "lmcache_mp_cb_lookup_duration_seconds",
            "From a request's first cb_unified_lookup to its answer.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.scatters = Counter(
            "lmcache_mp_cb_scatters", "cb_retrieve_pre_computed scatters run.", registry=registry
        )
        self.scatter_failures = Counter(
            "lmcache_mp_cb_scatter_failures", "Scatters that failed after their checks.", registry=registry
        )
        self.scatter_bytes = Counter(
            "lmcache_mp_cb_scatter_bytes", "Bytes written into engine blocks by scatters.", registry=registry
        )
        self.rerotated_bytes = Counter(
            "lmcache_mp_cb_rerotated_bytes", "Bytes of K re-rotated to a new position.", registry=registry
        )
        self.scatter_duration = Histogram(
            "lmcache_mp_cb_scatter_duration_seconds",
            "Time spent re-rotating and scattering one cb_retrieve_pre_computed.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self._gauges = []
        for suffix, (text, read) in gauges.items():
            gauge = Gauge(f"lmcache_mp_cb_{suffix}", text, registry=registry)
            gauge.set_function(read)
            self._gauges.append(gauge)

    def handle(self, event: Any, at: float) -> None:
        """Count one event."""
        if isinstance(event, BlendLookupFinished):
            self.lookups.labels(event.source).inc()
            for outcome, n in (
                ("found", event.found),
                ("partial", event.partial),
                ("stale", event.stale),
                ("returned", event.returned),
                ("segmented", event.segmented),
            ):
                self.matches.labels(outcome).inc(n)
            self.lookup_duration.observe(event.duration_s)
        elif isinstance(event, BlendScattered):
            if not event.ok:
                self.scatter_failures.inc()
                return
            self.scatters.inc()
            self.scatter_bytes.inc(event.bytes_written)
            self.rerotated_bytes.inc(event.bytes_rotated)
            self.scatter_duration.observe(event.duration_s)

    def close(self) -> None:
        """Nothing to release."""
