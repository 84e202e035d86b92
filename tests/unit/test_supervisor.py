from __future__ import annotations

import asyncio
import threading

import pytest

from lmcache.domain.supervisor import Supervisor
from tests.fakes.clock import FakeClock


class FlakyStep:
    """Raises on the calls listed in `fail_on` (1-based), succeeds otherwise."""

    def __init__(self, fail_on: set[int]) -> None:
        self.calls = 0
        self.fail_on = fail_on
        self.second_success = threading.Event()
        self.successes = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError(f"boom {self.calls}")
        self.successes += 1
        if self.successes >= 2:
            self.second_success.set()


def test_crash_is_counted_reported_unhealthy_until_the_next_run() -> None:
    clock = FakeClock()
    sup = Supervisor(clock)
    step = FlakyStep({2})
    sup.add("eviction", step, interval_s=1.0)
    assert sup.run_once("eviction") is True
    assert sup.healthy
    assert sup.run_once("eviction") is False
    health = sup.health()["eviction"]
    assert not health.healthy and health.failures == 1 and "boom 2" in (health.last_error or "")
    assert not sup.healthy
    clock.advance(5)
    assert sup.run_once("eviction") is True
    health = sup.health()["eviction"]
    assert health.healthy and health.runs == 2 and health.last_ok_at == clock.now


def test_thread_loop_restarts_after_a_crash() -> None:
    sup = Supervisor(FakeClock(), restart_delay_s=0.0)
    step = FlakyStep({1})
    sup.add("store", step, interval_s=0.0)
    sup.start()
    try:
        assert step.second_success.wait(10.0)
    finally:
        sup.stop()
    health = sup.health()["store"]
    assert health.failures == 1 and health.runs >= 2 and health.healthy


def test_async_loop_crash_and_recovery() -> None:
    sup = Supervisor(FakeClock())
    calls = {"n": 0}

    async def step() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first")

    sup.add_async("prefetch", step, interval_s=0.0)
    assert asyncio.run(sup.run_once_async("prefetch")) is False
    assert not sup.health()["prefetch"].healthy
    assert asyncio.run(sup.run_once_async("prefetch")) is True
    assert sup.health()["prefetch"].healthy


def test_duplicate_names_and_wrong_kind_are_refused() -> None:
    sup = Supervisor(FakeClock())
    sup.add("a", lambda: None, 1.0)
    with pytest.raises(ValueError, match="already"):
        sup.add("a", lambda: None, 1.0)

    async def noop() -> None:
        return None

    sup.add_async("b", noop, 1.0)
    with pytest.raises(ValueError, match="asynchronous"):
        sup.run_once("b")
