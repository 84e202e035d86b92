"""The production clock: `time.monotonic` behind the Clock port (the domain reads time only through it)."""

from __future__ import annotations

import time


class SystemClock:
    """Clock port backed by `time.monotonic`; thread-safe."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()
