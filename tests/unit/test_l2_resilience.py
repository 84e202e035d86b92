"""Circuit breaker (fake clock) and the deadline wrapper around an L2 adapter (the dict-backed fake)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lmcache.adapters.storage.resilience import CircuitBreaker, ResilientL2Adapter
from lmcache.domain.keys import ObjectKey
from lmcache.ports.l2_adapter import L2Adapter, L2Usage
from tests.fakes.clock import FakeClock
from tests.fakes.l2_adapter import FakeL2Adapter

if TYPE_CHECKING:
    from collections.abc import Sequence

K = ObjectKey(b"\x07" * 16, "m", 1)


def _breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(clock, "t", failure_threshold=3, base_backoff_s=1.0, max_backoff_s=4.0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.transitions["open"] == 1


def test_breaker_probes_once_after_backoff_and_doubles_it_on_failure() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(0.99)
    assert not breaker.allow()
    clock.advance(0.02)
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()
    assert breaker.state == "open" and breaker.backoff_s == 2.0
    clock.advance(1.5)
    assert not breaker.allow()
    clock.advance(0.6)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.backoff_s == 4.0
    clock.advance(4.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.backoff_s == 4.0  # capped
    clock.advance(4.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.backoff_s == 1.0
    assert breaker.transitions == {"open": 4, "half_open": 4, "closed": 1}


async def test_wrapper_turns_raises_into_misses_and_short_circuits_when_open() -> None:
    clock = FakeClock()
    fake = FakeL2Adapter()
    wrapped = ResilientL2Adapter(fake, breaker=_breaker(clock), deadline_s=1.0)
    _check: L2Adapter = wrapped
    assert await wrapped.store([K], [memoryview(b"abc")]) == [True]
    fake.raise_on = {"lookup", "load"}
    for _ in range(3):
        assert await wrapped.lookup_and_lock([K]) == [False]
    assert wrapped.breaker.state == "open"
    fake.raise_on = set()
    fake.delay_s = 0.0
    before = len(fake.loaded)
    assert await wrapped.load([K], [memoryview(bytearray(3))]) == [False]  # not forwarded
    assert len(fake.loaded) == before and wrapped.short_circuited == 1
    clock.advance(1.0)
    out = bytearray(3)
    assert await wrapped.load([K], [memoryview(out)]) == [True] and out == b"abc"
    assert wrapped.breaker.state == "closed"


async def test_wrapper_deadline_turns_a_hang_into_a_miss() -> None:
    fake = FakeL2Adapter()
    fake.hang_on = {"load", "usage"}
    wrapped = ResilientL2Adapter(fake, breaker=_breaker(FakeClock()), deadline_s=0.05)
    await wrapped.store([K], [memoryview(b"abc")])
    assert await asyncio.wait_for(wrapped.load([K], [memoryview(bytearray(3))]), 1.0) == [False]
    assert wrapped.deadline_misses == 1
    fake.hang_on = {"usage"}
    assert await wrapped.usage() == L2Usage(0, 0)  # the last usage seen (none yet)


async def test_wrapper_counts_backend_errors_reported_by_the_adapter() -> None:
    from lmcache.adapters.storage.mock import MockL2Adapter

    class Unreachable(MockL2Adapter):
        async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
            self.counters.backend_errors += 1  # what an adapter does when its backend fails
            return [False] * len(keys)

    mock = Unreachable(max_size_gb=1, mock_bandwidth_gb=100)
    wrapped = ResilientL2Adapter(mock, breaker=_breaker(FakeClock()))
    await wrapped.lookup_and_lock([K])
    await wrapped.store([K], [memoryview(b"abc")])  # a success in between resets the run
    for _ in range(3):
        assert await wrapped.lookup_and_lock([K]) == [False]
    assert wrapped.breaker.state == "open"
    assert wrapped.objects is mock.objects  # adapter attributes stay reachable


async def test_unlock_and_close_always_go_through() -> None:
    fake = FakeL2Adapter()
    wrapped = ResilientL2Adapter(fake, breaker=_breaker(FakeClock()))
    await wrapped.store([K], [memoryview(b"abc")])
    assert await wrapped.lookup_and_lock([K]) == [True]
    fake.raise_on = {"lookup"}
    for _ in range(3):
        await wrapped.lookup_and_lock([K])
    assert wrapped.breaker.state == "open"
    await wrapped.unlock([K])
    assert fake.locks[K] == 0
    await wrapped.close()
    assert fake.closed
