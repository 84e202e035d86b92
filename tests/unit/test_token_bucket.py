"""The mock adapter's token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from lmcache.adapters.storage.token_bucket import TokenBucket
from tests.fakes.clock import FakeClock


def test_burst_is_free_then_debt_queues() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000.0, burst=100.0, clock=clock)
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(500) == pytest.approx(0.5)
    assert bucket.reserve(500) == pytest.approx(1.0)  # queued behind the first transfer's debt


def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000.0, burst=100.0, clock=clock)
    bucket.reserve(1100)  # 1000 in debt
    clock.advance(1.1)
    assert bucket.reserve(100) == 0.0
    clock.advance(60.0)
    assert bucket.reserve(300) == pytest.approx(0.2)


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=1.0, clock=FakeClock())
