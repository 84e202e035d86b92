"""A token bucket that answers "how long must this transfer wait", so callers sleep instead of spinning."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcache.ports.clock import Clock

__all__ = ("TokenBucket",)


class TokenBucket:
    """Tokens are bytes, refilled at `rate` per second up to `burst`; a reservation may go into debt.

    Concurrent reservations queue up behind each other's debt, so N transfers in flight share the rate.
    Not thread-safe: one event loop owns it.
    """

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst < 0:
            raise ValueError("rate must be > 0 and burst >= 0")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock.monotonic()

    def reserve(self, nbytes: int) -> float:
        """Take `nbytes` tokens now; returns the seconds the caller must wait before its transfer is done."""
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
