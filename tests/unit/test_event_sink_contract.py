"""One EventSink contract, every sink.

The sinks: the recording fake, the null sink, the event bus (drained by the test, and with its own drain
thread), the fan-out, the KV-event log and the coordinator's event forwarder.

Each sink keeps a different part of what it is given (the log keeps L1 removals as `removed` records, the
forwarder the first adapter's L2 events, the null sink nothing), so each harness says what a list of
published events should leave downstream (`expected`) and reads what did (`seen`). Bounds and contained
subscriber failures are checked over the sinks that have them.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.coordinator.event_forwarder import CoordinatorEventForwarder
from lmcache.adapters.coordinator.l2_events import L2EventReporter
from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.domain import events as ev
from lmcache.domain.blend_events import BlendLookupFinished, BlendScattered
from lmcache.domain.event_fanout import FanoutEventSink
from lmcache.domain.keys import ObjectKey
from lmcache.domain.kv_events import KVEventLog
from lmcache.domain.null_events import NullEventSink
from tests.fakes.events import RecordingEventSink

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from lmcache.domain.events import StorageEvent
    from lmcache.ports.events import EventSink

SINKS = [
    "recording",
    "null",
    "event_bus",
    "event_bus_running",
    "fanout",
    "kv_event_log",
    "coordinator_forwarder",
]
BOUNDED = ["event_bus", "kv_event_log", "coordinator_forwarder"]  # hold at most CAPACITY events
WITH_SUBSCRIBERS = ["event_bus", "event_bus_running", "fanout"]
CAPACITY = 8


def key(i: int, model: str = "m") -> ObjectKey:
    return ObjectKey(i.to_bytes(32, "big"), model, 0x01000100, 0, "")


def samples(i: int = 0) -> list[StorageEvent]:
    """One event of every StorageEvent type (the first test checks none is missing)."""
    k, k2, other = key(i), key(i + 1), key(i, "other-model")
    return [
        ev.L1WriteCommitted((k,), 64),
        ev.L1WriteAborted((k2,), False),
        ev.L1Read(2, 1),
        ev.L1Removed((k, k2, other), 192, ev.EvictionReason.WATERMARK),
        ev.L1Removed((), 0, ev.EvictionReason.CLEAR),
        ev.AllocationFailed(k, 1 << 30),
        ev.L2Stored(0, (k, k2), 1, 1, 64, (64, 0)),
        ev.L2Stored(1, (k,), 1, 0, 64, (64,)),
        ev.L2Loaded(0, k, True, 64),
        ev.L2Loaded(0, k2, False, 0),
        ev.L2Deleted(0, (k, k2)),
        ev.L2Deleted(1, (k,)),
        ev.L2StoreDropped(3),
        ev.PrefetchCompleted(4, 2, 1, 1, 0),
        ev.TransferCompleted(ev.TransferKind.STORE, "r", "m", 256, 64, 0.001, True),
        ev.LookupPerformed("r", "m", 256, 512, (k.chunk_hash,), 0.001),
        ev.WorkerReaped(7, "m"),
        BlendLookupFinished("m", "local", 1, 1, 0, 0, 1, 0, 256, 0.001),
        BlendScattered("m", 1, 64, 32, 0.001, True),
    ]


@dataclass
class Raising:
    """A downstream sink or bus subscriber that always fails."""

    name: str = "raising"
    kinds: tuple[type, ...] = ()
    calls: int = 0

    def publish(self, event: StorageEvent) -> None:
        self.calls += 1
        raise RuntimeError("downstream bug")

    def handle(self, event: StorageEvent, at: float) -> None:
        self.publish(event)

    def close(self) -> None:
        pass


@dataclass
class BusRecorder:
    name: str = "recorder"
    kinds: tuple[type, ...] = ()
    seen: list[StorageEvent] = field(default_factory=list)

    def handle(self, event: StorageEvent, at: float) -> None:
        self.seen.append(event)

    def close(self) -> None:
        pass


def _log_expected(events: Sequence[StorageEvent]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, ev.L1Removed) and event.keys:
            models = dict.fromkeys(k.model_name for k in event.keys)
            for model in models:
                hashes = list(dict.fromkeys(k.chunk_hash for k in event.keys if k.model_name == model))
                out.append(("removed", model, hashes))
    return out


def _forwarder_expected(events: Sequence[StorageEvent]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, ev.L2Stored) and event.adapter_index == 0:
            out += [("store", k, n) for k, n in zip(event.keys, event.sizes, strict=False) if n]
        elif isinstance(event, ev.L2Loaded) and event.ok and event.adapter_index == 0:
            out.append(("lookup", event.key, 0))
        elif isinstance(event, ev.L2Deleted) and event.adapter_index == 0:
            out += [("delete", k, 0) for k in event.keys]
    return out


@dataclass
class Harness:
    """A sink under test: `expected(events)` is what publishing them should leave; `seen()` what did."""

    name: str
    sink: EventSink
    seen: Callable[[], list[Any]]
    expected: Callable[[Sequence[StorageEvent]], list[Any]]
    settle: Callable[[], object] = lambda: None  # let queued events reach `seen`
    held: Callable[[], int] = lambda: 0
    dropped: Callable[[], int] = lambda: 0
    failures: Callable[[], int] = lambda: 0


def _identity(events: Sequence[StorageEvent]) -> list[Any]:
    return list(events)


def _bus(capacity: int, failing: bool, running: bool) -> Harness:
    bus = EventBus(capacity, batch_window_s=0.0)
    recorder = BusRecorder()
    if failing:
        bus.subscribe(Raising())
    bus.subscribe(recorder)
    if running:
        bus.start()
    return Harness(
        "event_bus",
        bus,
        lambda: recorder.seen,
        _identity,
        settle=bus.stop if running else bus.drain,  # stop delivers what is queued, then joins
        held=lambda: bus.depth,
        dropped=lambda: bus.dropped,
        failures=lambda: sum(bus.subscriber_errors.values()),
    )


def _fanout(failing: bool) -> Harness:
    first, second = RecordingEventSink(), RecordingEventSink()
    fanout = FanoutEventSink([Raising(), first, second] if failing else [first, second])

    def seen() -> list[Any]:
        assert first.events == second.events  # every sink gets every event
        return list(first.events)

    return Harness("fanout", fanout, seen, _identity, failures=lambda: fanout.failures)


def _kv_event_log(capacity: int) -> Harness:
    log = KVEventLog(capacity, incarnation=1)

    def seen() -> list[Any]:
        batches = [log.read(model, 0, 1 << 20) for model in ("m", "other-model")]
        records = sorted((r for b in batches for r in b.events), key=lambda r: r.seq)
        return [(r.kind, r.model_name, r.block_hashes) for r in records]

    lost = lambda: int(log.read("m", 0, 1).lost)  # noqa: E731 - the log counts no drops; a reader is told
    return Harness("kv_event_log", log, seen, _log_expected, held=lambda: len(log), dropped=lost)


def _forwarder(capacity: int) -> Harness:
    reporter = L2EventReporter("server-1", max_buffered=capacity)
    return Harness(
        "coordinator_forwarder",
        CoordinatorEventForwarder(reporter),
        lambda: list(reporter._queue),  # what the next flushes would send, oldest first
        _forwarder_expected,
        held=lambda: reporter.buffered,
        dropped=lambda: reporter.dropped,
    )


def _make(name: str, capacity: int = 1 << 20, failing: bool = False) -> Harness:
    if name == "recording":
        rec = RecordingEventSink()
        return Harness(name, rec, lambda: list(rec.events), _identity)
    if name == "null":
        return Harness(name, NullEventSink(), list, lambda events: [])
    if name in ("event_bus", "event_bus_running"):
        return _bus(capacity, failing, name == "event_bus_running")
    if name == "fanout":
        return _fanout(failing)
    if name == "kv_event_log":
        return _kv_event_log(capacity)
    if name == "coordinator_forwarder":
        return _forwarder(capacity)
    raise AssertionError(name)


@pytest.fixture(params=SINKS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = _make(request.param)
    yield h
    h.settle()  # a running bus stops its thread


def test_the_samples_cover_every_event_type() -> None:
    assert {type(e) for e in samples()} == set(typing.get_args(ev.StorageEvent))


def test_every_event_type_is_frozen_so_a_sink_may_keep_it() -> None:
    for kind in typing.get_args(ev.StorageEvent):
        params = getattr(kind, "__dataclass_params__", None)
        assert dataclasses.is_dataclass(kind) and params is not None and params.frozen, kind


def test_every_event_type_is_taken_and_what_the_sink_keeps_comes_out(harness: Harness) -> None:
    events = samples()
    for event in events:
        harness.sink.publish(event)  # never raises
    harness.settle()
    assert harness.seen() == harness.expected(events)


def test_events_come_out_once_and_in_order(harness: Harness) -> None:
    events = [e for i in range(3) for e in samples(10 * i)][::-1]
    for event in events:
        harness.sink.publish(event)
    harness.settle()
    assert harness.seen() == harness.expected(events)


def test_publish_from_many_threads_loses_nothing(harness: Harness) -> None:
    batches = [[e for i in range(20) for e in samples(1000 * t + 2 * i)] for t in range(4)]
    errors: list[BaseException] = []

    def publisher(events: list[StorageEvent]) -> None:
        try:
            for event in events:
                harness.sink.publish(event)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    harness.settle()
    assert errors == []
    want = Counter(repr(x) for b in batches for x in harness.expected(b))
    assert Counter(repr(x) for x in harness.seen()) == want


@pytest.mark.parametrize("name", BOUNDED)
def test_a_full_sink_drops_and_counts_instead_of_growing(name: str) -> None:
    h = _make(name, capacity=CAPACITY)
    for i in range(10 * CAPACITY):
        h.sink.publish(ev.L1Removed((key(i),), 64, ev.EvictionReason.WATERMARK))
        h.sink.publish(ev.L2Stored(0, (key(i),), 1, 0, 64, (64,)))
    assert 0 < h.held() <= CAPACITY
    assert h.dropped() > 0


@pytest.mark.parametrize("name", WITH_SUBSCRIBERS)
def test_a_failing_subscriber_neither_reaches_the_publisher_nor_stops_the_others(name: str) -> None:
    h = _make(name, failing=True)
    events = samples()
    for event in events:
        h.sink.publish(event)  # the failure stays downstream
    h.settle()
    assert h.seen() == events
    assert h.failures() == len(events)
