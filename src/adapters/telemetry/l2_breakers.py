"""Circuit-breaker state of every L2 adapter, read at scrape time (the dashboard's "breaker state" panel).

`lmcache_mp_l2_circuit_breaker_state` is 0 closed, 1 half-open, 2 open; the transitions counter says how
often each state was entered. Labels are the adapter's cascade position and `"type"` (bounded). Adapters
without a breaker (none today: the L2 factory wraps every adapter) export nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

__all__ = ("BREAKER_STATES", "L2BreakerCollector")

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
_LABELS = ["adapter", "type"]


class L2BreakerCollector:
    """A prometheus_client collector over the breakers of the L2 cascade.

    Args:
        adapters: The cascade, as built (each wrapped with its breaker).
        types: Each adapter's `"type"`.
    """

    def __init__(self, adapters: Sequence[Any], types: Sequence[str]) -> None:
        self._breakers = [
            ([str(i), kind], breaker)
            for i, (adapter, kind) in enumerate(zip(adapters, types, strict=True))
            if (breaker := getattr(adapter, "breaker", None)) is not None
        ]

    def describe(self) -> list[Metric]:
        """No up-front description: the registry then calls `collect` only at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the current states and transition counts."""
        if not self._breakers:
            return
        state = GaugeMetricFamily(
            "lmcache_mp_l2_circuit_breaker_state",
            "Circuit breaker of an L2 adapter: 0 closed, 1 half-open, 2 open.",
            labels=_LABELS,
        )
        moves = CounterMetricFamily(
            "lmcache_mp_l2_circuit_breaker_transitions",
            "Times an L2 adapter's circuit breaker entered a state.",
            labels=[*_LABELS, "state"],
        )
        for labels, breaker in self._breakers:
            state.add_metric(labels, BREAKER_STATES.get(breaker.state, 2))
            for name in BREAKER_STATES:
                moves.add_metric([*labels, name], breaker.transitions.get(name, 0))
        yield state
        yield moves
