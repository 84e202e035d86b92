"""Clock port: the only source of time for the domain, so tests drive TTLs with a fake clock."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """A monotonic clock.

    Thread-safety: `monotonic` may be called from any thread at any rate; it must not block.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (the origin is arbitrary).

        Returns:
            The current reading. Two readings from any threads are ordered by real time.
        """
        ...
