"""The logging subscriber (off with --disable-logging): storage events as log lines.

Trouble (allocation failures, failed L2 stores and loads, dropped L2 stores) is logged at WARNING, at
most once per `interval_s` per kind with the count since the last line, so a failing tier cannot flood
the log. Routine events (evictions, commits, lookups, transfers) go to DEBUG, built only when enabled
(L1 evictions are not INFO: under pressure the eviction loop runs ten times a second).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from lmcache.domain.events import AllocationFailed, L2Loaded, L2Stored, L2StoreDropped

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.events import StorageEvent

__all__ = ("EventLogger",)

logger = logging.getLogger("lmcache.events")


class EventLogger:
    """Logs events; rate-limits the warnings.

    Args:
        interval_s: Minimum gap between two warnings of one kind.
        clock: Monotonic time source (tests pass a fake).
    """

    name = "logging"
    kinds: tuple[type, ...] = ()

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def handle(self, event: StorageEvent, at: float) -> None:
        """Log one event."""
        problem = _problem(event)
        if problem is not None:
            self._warn(type(event).__name__, problem)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", _summary(event))

    def close(self) -> None:
        """Nothing to release."""

    def _warn(self, kind: str, message: str) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning("%s%s", message, more)


def _problem(event: StorageEvent) -> str | None:
    """The warning an event deserves, or None for a routine event."""
    if isinstance(event, AllocationFailed):
        return f"L1 is full: no room for an object of {event.nbytes} bytes even after eviction"
    if isinstance(event, L2Stored) and event.failed:
        return (
            f"L2 adapter #{event.adapter_index} failed to store {event.failed} of {len(event.keys)} objects"
        )
    if isinstance(event, L2Loaded) and not event.ok:
        return f"L2 adapter #{event.adapter_index} failed to load {event.key.short()}"
    if isinstance(event, L2StoreDropped):
        return f"L2 store queue full: {event.count} objects not stored to L2"
    return None


def _summary(event: StorageEvent) -> str:
    """`Name(field=value, ...)` with tuples shown by length: a batch may hold a million keys."""
    parts = []
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        parts.append(f"{f.name}=<{len(value)}>" if isinstance(value, tuple) else f"{f.name}={value!r}")
    return f"{type(event).__name__}({', '.join(parts)})"
