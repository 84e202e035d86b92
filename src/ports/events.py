"""EventSink port: where the domain publishes storage events (domain/events.py) for telemetry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lmcache.domain.events import StorageEvent


class EventSink(Protocol):
    """Receives storage events from the domain.

    Threading: `publish` is called from any thread, often while the L1 manager holds its lock, so it
    must be quick and non-blocking (a bounded queue that drops and counts when full) and must never call
    back into the domain.

    Ownership: events are immutable; the sink may keep them.

    Failure: `publish` never raises; a failing subscriber is the sink's problem, logged and counted there.
    """

    def publish(self, event: StorageEvent) -> None:
        """Hand one event over; returns at once."""
        ...
