"""The production clock: `time.monotonic`, kept in the domain because it needs nothing but the stdlib."""

from __future__ import annotations

import time


class SystemClock:
    """Clock port backed by `time.monotonic`; thread-safe."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()
