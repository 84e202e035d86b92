"""The event bus: tail-drop with a counter, contained subscriber errors, routing by type, draining stop."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest

from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.domain.events import L1Read, L2StoreDropped, StorageEvent, WorkerReaped


@dataclass
class Recorder:
    name: str = "recorder"
    kinds: tuple[type, ...] = ()
    seen: list[tuple[StorageEvent, float]] = field(default_factory=list)
    closed: bool = False

    def handle(self, event: StorageEvent, at: float) -> None:
        self.seen.append((event, at))

    def close(self) -> None:
        self.closed = True


@dataclass
class Failing:
    name: str = "failing"
    kinds: tuple[type, ...] = ()
    calls: int = 0

    def handle(self, event: StorageEvent, at: float) -> None:
        self.calls += 1
        raise RuntimeError("subscriber bug")

    def close(self) -> None:
        raise OSError("close failed")


def test_publish_drops_and_counts_when_full() -> None:
    bus = EventBus(3, wall=lambda: 5.0)
    recorder = Recorder()
    bus.subscribe(recorder)
    for i in range(5):
        bus.publish(L1Read(i, 0))
    assert bus.depth == 3
    assert bus.dropped == 2
    assert bus.drain() == 3
    assert [e.requested for e, _ in recorder.seen] == [0, 1, 2]  # the newest were dropped (tail-drop)
    assert all(at == 5.0 for _, at in recorder.seen)
    bus.publish(L1Read(9, 0))  # room again after the drain
    assert bus.depth == 1
    assert bus.dropped == 2


def test_subscriber_error_is_counted_contained_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus(100, error_log_interval_s=3600)
    failing, after = Failing(), Recorder()
    bus.subscribe(failing)
    bus.subscribe(after)
    for i in range(4):
        bus.publish(L1Read(i, i))
    with caplog.at_level(logging.WARNING, logger="lmcache.adapters.telemetry.event_bus"):
        assert bus.drain() == 4
    assert failing.calls == 4
    assert len(after.seen) == 4  # the subscriber after the failing one still got every event
    assert bus.subscriber_errors["failing"] == 4
    assert len([r for r in caplog.records if "failing" in r.getMessage()]) == 1
    bus.stop()  # a subscriber whose close raises does not stop the others from closing
    assert after.closed


def test_routing_by_event_type() -> None:
    bus = EventBus(10)
    only_reaped = Recorder("reaped", (WorkerReaped,))
    everything = Recorder("all")
    bus.subscribe(only_reaped)
    bus.subscribe(everything)
    bus.publish(L1Read(1, 1))
    bus.publish(WorkerReaped(7, "m"))
    bus.publish(L2StoreDropped(3))
    bus.drain()
    assert [e for e, _ in only_reaped.seen] == [WorkerReaped(7, "m")]
    assert len(everything.seen) == 3


def test_stop_drains_what_is_queued_and_closes_subscribers() -> None:
    bus = EventBus(1000)
    gate = threading.Event()

    @dataclass
    class Slow(Recorder):
        def handle(self, event: StorageEvent, at: float) -> None:
            gate.wait(5)
            super().handle(event, at)

    slow = Slow()
    bus.subscribe(slow)
    bus.start()
    for i in range(200):
        bus.publish(L1Read(i, 0))
    assert bus.depth > 0  # the drain thread is stuck on the first event
    gate.set()
    bus.stop(timeout_s=10)
    assert len(slow.seen) == 200
    assert [e.requested for e, _ in slow.seen] == list(range(200))
    assert bus.depth == 0
    assert slow.closed
    assert not bus.running
    assert bus.delivered == 200


def test_drain_thread_delivers_without_stop() -> None:
    bus = EventBus(10)
    got = threading.Event()

    @dataclass
    class Signal(Recorder):
        def handle(self, event: StorageEvent, at: float) -> None:
            super().handle(event, at)
            got.set()

    bus.subscribe(Signal())
    bus.start()
    try:
        bus.publish(WorkerReaped(1, "m"))
        assert got.wait(5)
    finally:
        bus.stop()


def test_subscribe_after_start_is_refused() -> None:
    bus = EventBus(10)
    bus.start()
    try:
        with pytest.raises(RuntimeError, match="before the event bus starts"):
            bus.subscribe(Recorder())
    finally:
        bus.stop()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--event-bus-queue-size"):
        EventBus(0)
