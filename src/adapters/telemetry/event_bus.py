"""The event bus: a bounded queue between the domain's `publish` and the telemetry subscribers.

`publish` runs on request threads, often under the L1 lock, so it only stamps the wall time and appends
to a deque (tail-drop with a counter when `capacity` events wait). One drain thread hands each event to
the subscribers that asked for its type; a subscriber that raises is counted and logged (at most once per
`error_log_interval_s` per subscriber), never allowed to stop the others.

Wakeups: the drain thread sleeps on an Event that `publish` sets only when it is clear, so a busy bus
costs one `is_set()` read per event rather than a lock round trip. Once woken, the thread waits
`batch_window_s` (20 ms; not when the queue is half full) before draining, so a stream of requests wakes
it once per window rather than once per request: each wake-up takes the GIL from the thread about to send
a reply. Telemetry lags by at most that window.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.events import StorageEvent

__all__ = ("EventBus", "Subscriber")

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    """A consumer of bus events; every method runs on the bus's drain thread only.

    Attributes:
        name: Label of its error counter and log lines.
        kinds: Event types it wants; an empty tuple means every event.
    """

    name: str
    kinds: tuple[type, ...]

    def handle(self, event: StorageEvent, at: float) -> None:
        """Consume one event published at wall time `at` (seconds since the epoch)."""
        ...

    def close(self) -> None:
        """Release what it holds (files, exporters); called once when the bus stops."""
        ...


class EventBus:
    """Bounded, single-consumer EventSink.

    Args:
        capacity: Events queued at most (`--event-bus-queue-size`); newer ones are dropped and counted.
        wall: Wall clock stamped on each event (tests pass a fake).
        error_log_interval_s: Minimum gap between two logged errors of one subscriber.
        batch_window_s: How long the drain thread lets events gather after the first one wakes it.
    """

    def __init__(
        self,
        capacity: int,
        wall: Callable[[], float] = time.time,
        error_log_interval_s: float = 10.0,
        batch_window_s: float = 0.02,
    ) -> None:
        if capacity < 1:
            raise ValueError("--event-bus-queue-size must be >= 1")
        self.capacity = capacity
        self._wall = wall
        self._queue: collections.deque[tuple[float, StorageEvent]] = collections.deque()
        self._wake = threading.Event()
        self._drop_lock = threading.Lock()
        self.dropped = 0
        self.delivered = 0
        self.subscriber_errors: collections.Counter[str] = collections.Counter()
        self._subscribers: list[Subscriber] = []
        self._routes: dict[type, list[Subscriber]] = {}
        self._error_log_interval_s = error_log_interval_s
        self._last_error_log: dict[str, float] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batch_window_s = batch_window_s

    # ---------------------------------------------------------------- publish
    def publish(self, event: StorageEvent) -> None:
        """Queue the event, or drop and count it when the queue is full; never blocks or raises."""
        if len(self._queue) >= self.capacity:
            with self._drop_lock:
                self.dropped += 1
            return
        self._queue.append((self._wall(), event))
        if not self._wake.is_set():
            self._wake.set()

    @property
    def depth(self) -> int:
        """Events waiting for the drain thread."""
        return len(self._queue)

    # ------------------------------------------------------------ subscribers
    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a subscriber; only before `start` (the routing table is not locked)."""
        if self._thread is not None:
            raise RuntimeError("subscribe before the event bus starts")
        self._subscribers.append(subscriber)
        self._routes.clear()

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The registered subscribers, in delivery order."""
        return tuple(self._subscribers)

    def _route(self, kind: type) -> list[Subscriber]:
        route = self._routes.get(kind)
        if route is None:
            route = [s for s in self._subscribers if not s.kinds or issubclass(kind, s.kinds)]
            self._routes[kind] = route
        return route

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the drain thread (idempotent)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lmcache-event-bus", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (for up to `timeout_s`), stop the thread and close the subscribers."""
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning(
                    "Event bus did not drain in %.1f s; %d events left undelivered", timeout_s, self.depth
                )
            self._thread = None
        for subscriber in self._subscribers:
            try:
                subscriber.close()
            except Exception:
                logger.exception("Closing event subscriber %s failed", subscriber.name)

    @property
    def running(self) -> bool:
        """Whether the drain thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            if not self._stopping and len(self._queue) < self.capacity // 2:
                # Let a batch gather: one wake-up per window instead of one per request keeps this thread
                # from taking the GIL between a request's work and its reply (benchmarks/data_path.py).
                time.sleep(self.batch_window_s)
            self.drain()
            if self._stopping and not self._queue:
                return
            self._wake.clear()
            if not self._queue and not self._stopping:  # a publish between drain and clear set nothing
                self._wake.wait(1.0)

    def drain(self) -> int:
        """Deliver every queued event on the calling thread; returns how many (the drain thread's loop)."""
        done = 0
        queue = self._queue
        while queue:
            at, event = queue.popleft()
            for subscriber in self._route(type(event)):
                try:
                    subscriber.handle(event, at)
                except Exception as exc:
                    self._on_error(subscriber, event, exc)
            done += 1
        self.delivered += done
        return done

    def _on_error(self, subscriber: Subscriber, event: StorageEvent, exc: Exception) -> None:
        self.subscriber_errors[subscriber.name] += 1
        now = time.monotonic()
        last = self._last_error_log.get(subscriber.name)
        if last is None or now - last >= self._error_log_interval_s:
            self._last_error_log[subscriber.name] = now
            logger.warning(
                "Event subscriber %s failed on %s (%d errors so far): %r",
                subscriber.name,
                type(event).__name__,
                self.subscriber_errors[subscriber.name],
                exc,
            )
