"""Heartbeat health and recovery, and the reply waiter that gives up when the server is down."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from lmcache.adapters.vllm.heartbeat import RECOVERY_PROBE_S, Heartbeat
from lmcache.adapters.vllm.transfer_base import Waiter


class FlakyServer:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0
        self.recoveries = 0
        self.recovery_works = True
        self.timeouts: list[float] = []

    def ping(self, timeout_s: float) -> None:
        self.pings += 1
        self.timeouts.append(timeout_s)
        if not self.up:
            raise TimeoutError("no reply")

    def recover(self) -> bool:
        self.recoveries += 1
        return self.recovery_works


def test_a_missed_ping_marks_unhealthy_and_the_next_answer_recovers() -> None:
    server = FlakyServer()
    beat = Heartbeat(server.ping, 10.0, server.recover)
    assert beat.beat() and beat.healthy and server.recoveries == 0
    server.up = False
    assert not beat.beat() and not beat.healthy
    server.up = True
    server.recovery_works = False
    assert not beat.beat() and not beat.healthy and beat.recovering
    server.recovery_works = True
    assert beat.beat() and beat.healthy and not beat.recovering
    assert server.recoveries == 2


def test_a_requested_recovery_runs_on_the_next_beat() -> None:
    server = FlakyServer()
    beat = Heartbeat(server.ping, 60.0, server.recover)
    beat.beat()
    beat._wake.clear()
    beat._recover = True  # what request_recovery sets, without starting the thread
    assert beat.beat()
    assert server.recoveries == 1
    assert beat.beat() and server.recoveries == 1


def test_the_thread_pings_until_stopped() -> None:
    server = FlakyServer()
    beat = Heartbeat(server.ping, 0.01, server.recover)
    beat.start()
    beat.start()
    import time

    deadline = time.monotonic() + 5
    while server.pings < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert server.pings >= 3
    assert not beat.started


def test_an_unhealthy_server_is_probed_faster_until_it_recovers() -> None:
    server = FlakyServer()
    beat = Heartbeat(server.ping, 10.0, server.recover)
    beat.beat()
    server.up = False
    beat.beat()
    server.up = True
    server.recovery_works = False
    beat.beat()  # answered, but recovery failed: still probing fast
    server.recovery_works = True
    beat.beat()
    beat.beat()
    assert server.timeouts == [10.0, 10.0, RECOVERY_PROBE_S, RECOVERY_PROBE_S, 10.0]
    short = Heartbeat(server.ping, 0.2, server.recover)
    server.up = False
    short.beat()
    short.beat()
    assert server.timeouts[-2:] == [0.2, 0.2]  # the probe never exceeds the interval


def test_the_waiter_returns_replies_and_gives_up_on_an_unhealthy_server() -> None:
    done: Future[int] = Future()
    done.set_result(7)
    assert Waiter(1.0, lambda: True)(done) == 7
    with pytest.raises(TimeoutError):
        Waiter(0.05, lambda: True, slice_s=0.01)(Future())
    with pytest.raises(TimeoutError):
        Waiter(60.0, lambda: False, slice_s=0.01)(Future())  # gives up long before 60 s
