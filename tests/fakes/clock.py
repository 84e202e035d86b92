"""FakeClock: a Clock that moves only when a test says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcache.ports.clock import Clock


@dataclass
class FakeClock:
    """Monotonic time under test control."""

    now: float = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_check: Clock = FakeClock()
