"""An EventSink that drops everything: the domain's default when no telemetry is wired."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcache.domain.events import StorageEvent


class NullEventSink:
    """Discards events; thread-safe."""

    def publish(self, event: StorageEvent) -> None:
        """Drop the event."""
