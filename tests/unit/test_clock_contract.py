"""One Clock contract for FakeClock and the production SystemClock.

Letting time pass is the harness's job: the fake advances, the system clock is waited on for a
millisecond (a spin on `time.monotonic`, never a sleep), so the whole suite runs in milliseconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from lmcache.adapters.system_clock import SystemClock
from tests.fakes.clock import FakeClock

if TYPE_CHECKING:
    from lmcache.ports.clock import Clock


@dataclass
class Harness:
    clock: Clock

    def let_pass(self, seconds: float) -> None:
        if isinstance(self.clock, FakeClock):
            self.clock.advance(seconds)
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass


@pytest.fixture(params=["fake", "system"])
def harness(request: pytest.FixtureRequest) -> Harness:
    return Harness(FakeClock() if request.param == "fake" else SystemClock())


def test_a_reading_is_a_float_in_seconds(harness: Harness) -> None:
    assert type(harness.clock.monotonic()) is float


def test_readings_never_go_backwards(harness: Harness) -> None:
    readings = []
    for step in range(200):
        readings.append(harness.clock.monotonic())
        if step % 50 == 0:
            harness.let_pass(0.0005)
    assert readings == sorted(readings)


def test_time_that_passes_shows_in_seconds(harness: Harness) -> None:
    before = harness.clock.monotonic()
    harness.let_pass(0.002)
    elapsed = harness.clock.monotonic() - before
    assert 0.002 - 1e-9 <= elapsed < 1.0  # seconds, not milliseconds or nanoseconds


def test_readings_from_several_threads_are_ordered_by_real_time(harness: Harness) -> None:
    order = threading.Lock()
    readings: list[float] = []
    errors: list[BaseException] = []

    def reader(passes_time: bool) -> None:
        try:
            for _ in range(100):
                with order:  # the lock's order is the real-time order of the readings
                    readings.append(harness.clock.monotonic())
                    if passes_time:
                        harness.let_pass(0.00001)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n == 0,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(readings) == 400
    assert readings == sorted(readings)
