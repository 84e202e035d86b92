"""Feeds the server's L2 store, load and delete events to the coordinator's event reporter.

It sits in the domain's synchronous event fan-out, not on the telemetry bus, so fleet accounting keeps
working with `--disable-observability` and never loses events to a full bus. That is cheap: the reporter
only appends to its bounded buffer. Only the first L2 adapter is reported, because the coordinator's
fleet eviction acts on it (`DELETE /l2` deletes from the first adapter). A successful load is the
server's L2 lookup hit (the coordinator's `lookup` event: it touches the key's LRU position); a delete
carries no size (the coordinator subtracts the size it recorded at store time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.domain.events import L2Deleted, L2Loaded, L2Stored

if TYPE_CHECKING:
    from lmcache.adapters.coordinator.l2_events import L2EventReporter
    from lmcache.domain.events import StorageEvent

__all__ = ("CoordinatorEventForwarder",)

_REPORTED_ADAPTER = 0


class CoordinatorEventForwarder:
    """An EventSink turning `L2Stored`, successful `L2Loaded` and `L2Deleted` events into reporter records."""

    def __init__(self, reporter: L2EventReporter) -> None:
        self._reporter = reporter

    def publish(self, event: StorageEvent) -> None:
        """Record the event when it concerns the first L2 adapter; ignore everything else."""
        if isinstance(event, L2Stored):
            if event.adapter_index == _REPORTED_ADAPTER:
                for key, size in zip(event.keys, event.sizes, strict=False):
                    if size:
                        self._reporter.record_store(key, size)
        elif isinstance(event, L2Loaded) and event.ok and event.adapter_index == _REPORTED_ADAPTER:
            self._reporter.record_lookup(event.key)
        elif isinstance(event, L2Deleted) and event.adapter_index == _REPORTED_ADAPTER:
            for key in event.keys:
                self._reporter.record_delete(key)
