"""An EventSink that hands each event to several sinks (KV-event log, telemetry, ...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.events import StorageEvent
    from lmcache.ports.events import EventSink

logger = logging.getLogger(__name__)


class FanoutEventSink:
    """Publishes to every sink in order; a sink that raises is logged and skipped."""

    def __init__(self, sinks: Sequence[EventSink] = ()) -> None:
        self.sinks = list(sinks)
        self.failures = 0

    def publish(self, event: StorageEvent) -> None:
        """Hand the event to each sink."""
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception:
                self.failures += 1
                logger.exception("event sink %s failed", type(sink).__name__)
