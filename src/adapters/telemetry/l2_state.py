"""Prometheus gauges and counters of the L2 data services, read from the adapters at scrape time.

Per adapter with `"eviction"`: the bytes and objects it holds as eviction counts them, its capacity, and
the objects and bytes evicted and refused. Per adapter with `"serde"`: the failures by kind. Labels are
the adapter's cascade position and type (bounded). Adapters without these services export nothing here
(their usage is a backend scan, too slow for a scrape: `/status` shows it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lmcache.adapters.storage._layers import find_layer

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

__all__ = ("L2ServicesCollector",)

_LABELS = ["adapter", "type"]


class L2ServicesCollector:
    """A prometheus_client collector over the L2 cascade (see the module docstring).

    Args:
        adapters: The cascade, as built (wrappers included).
        types: Each adapter's `"type"`.
    """

    def __init__(self, adapters: Sequence[Any], types: Sequence[str]) -> None:
        self._labels = [[str(i), t] for i, t in enumerate(types)]
        self._evicting = [find_layer(a, "eviction_stats") for a in adapters]
        self._serde = [find_layer(a, "serde_stats") for a in adapters]

    def describe(self) -> list[Metric]:
        """No up-front description: the registry then calls `collect` only at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        used = GaugeMetricFamily(
            "lmcache_mp_l2_usage_bytes", "Bytes an L2 adapter holds (eviction's count).", labels=_LABELS
        )
        cap = GaugeMetricFamily(
            "lmcache_mp_l2_capacity_bytes", "Capacity of an L2 adapter with eviction.", labels=_LABELS
        )
        objects = GaugeMetricFamily(
            "lmcache_mp_l2_objects", "Objects an L2 adapter holds (eviction's count).", labels=_LABELS
        )
        evicted = CounterMetricFamily(
            "lmcache_mp_l2_evicted_objects", "Objects deleted by L2 eviction.", labels=_LABELS
        )
        evicted_bytes = CounterMetricFamily(
            "lmcache_mp_l2_evicted_bytes", "Bytes freed by L2 eviction.", labels=_LABELS
        )
        refused = CounterMetricFamily(
            "lmcache_mp_l2_capacity_rejections",
            "Stores an L2 adapter refused for lack of room.",
            labels=_LABELS,
        )
        serde = CounterMetricFamily(
            "lmcache_mp_l2_serde_failures",
            "Objects a serde could not encode or decode, by kind.",
            labels=[*_LABELS, "kind"],
        )
        for labels, layer in zip(self._labels, self._evicting, strict=True):
            if layer is None:
                continue
            stats = layer.eviction_stats()
            used.add_metric(labels, stats.used_bytes)
            cap.add_metric(labels, stats.capacity_bytes)
            objects.add_metric(labels, stats.objects)
            evicted.add_metric(labels, stats.evicted_objects)
            evicted_bytes.add_metric(labels, stats.evicted_bytes)
            refused.add_metric(labels, stats.rejected_objects)
        for labels, layer in zip(self._labels, self._serde, strict=True):
            if layer is None:
                continue
            counts = layer.serde_stats()
            for kind in ("encode_failures", "mismatches", "auth_failures", "decode_failures"):
                serde.add_metric([*labels, kind], counts.get(kind, 0))
        yield from (used, cap, objects, evicted, evicted_bytes, refused, serde)
