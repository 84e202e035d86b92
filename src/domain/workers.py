"""Registered engine workers and their liveness (wire-protocol.md §5.8).

An instance is reaped when silent past `reap_timeout_s` after it has pinged at least once, or past
`grace_s` when it never pinged (a worker still warming up). A timeout of 0 disables reaping.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lmcache.ports.clock import Clock

WorkerKind = Literal["lmcache_driven", "engine_driven"]


@dataclass(slots=True)
class Worker:
    """One registration.

    Attributes:
        instance_id: The client's opaque int64 id.
        model_name: Model of its keys.
        world_size: World size of its keys.
        kind: Which transfer path registered it.
        layout: Its object layout (a `RegisteredLayout` or `EngineDrivenLayout`).
        transfer: The mapped KV memory (`KVTransfer`) for lmcache-driven workers, else None.
        registered_at: Clock time of registration.
        last_seen: Clock time of the last request from it.
        has_pinged: Whether it ever sent `ping(instance_id)`.
        extra: Registration details for `/status` (engine type, hints, formats).
    """

    instance_id: int
    model_name: str
    world_size: int
    kind: WorkerKind
    layout: Any
    transfer: Any
    registered_at: float
    last_seen: float
    has_pinged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class WorkerRegistry:
    """Thread-safe table of workers; also answers which layout serves a (model, world_size) lookup."""

    def __init__(self, clock: Clock, reap_timeout_s: float = 120.0, grace_s: float = 3600.0) -> None:
        self._clock = clock
        self.reap_timeout_s = reap_timeout_s
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._workers: dict[int, Worker] = {}
        self.reaped_total = 0
        self.failed: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def now(self) -> float:
        """The registry's clock."""
        return self._clock.monotonic()

    def add(self, worker: Worker) -> None:
        """Insert a new registration (the caller checked `get` first)."""
        with self._lock:
            self._workers[worker.instance_id] = worker
            self.failed.pop(worker.instance_id, None)

    def get(self, instance_id: int, touch: bool = True) -> Worker | None:
        """The worker, refreshing its `last_seen` unless `touch` is False."""
        with self._lock:
            worker = self._workers.get(instance_id)
            if worker is not None and touch:
                worker.last_seen = self._clock.monotonic()
            return worker

    def ping(self, instance_id: int) -> bool:
        """Refresh and mark as pinged; False for an unknown id (ignored)."""
        with self._lock:
            worker = self._workers.get(instance_id)
            if worker is None:
                return False
            worker.last_seen = self._clock.monotonic()
            worker.has_pinged = True
            return True

    def remove(self, instance_id: int) -> Worker | None:
        """Drop a registration; returns it (the caller unmaps its memory)."""
        with self._lock:
            return self._workers.pop(instance_id, None)

    def mark_failed(self, instance_id: int, reason: str) -> None:
        """Remember a registration that could not be served (listed in `/status`)."""
        with self._lock:
            self.failed[instance_id] = reason

    def layout_for(self, model_name: str, world_size: int) -> Any | None:
        """The layout of the most recent registration serving (model, world_size), or None."""
        with self._lock:
            best: Worker | None = None
            for worker in self._workers.values():
                if (
                    worker.model_name == model_name
                    and worker.world_size == world_size
                    and (best is None or worker.registered_at >= best.registered_at)
                ):
                    best = worker
            return None if best is None else best.layout

    def workers(self) -> list[Worker]:
        """A snapshot of all registrations."""
        with self._lock:
            return list(self._workers.values())

    def reap(self) -> list[Worker]:
        """Remove and return workers silent past their budget (a supervised loop step)."""
        if self.reap_timeout_s <= 0:
            return []
        now = self._clock.monotonic()
        with self._lock:
            dead = [
                w
                for w in self._workers.values()
                if now - w.last_seen > (self.reap_timeout_s if w.has_pinged else self.grace_s)
            ]
            for worker in dead:
                del self._workers[worker.instance_id]
            self.reaped_total += len(dead)
            return dead

    @property
    def interval_s(self) -> float:
        """How often the reaper should run: a quarter of the timeout (at least 0.05 s)."""
        return max(0.05, self.reap_timeout_s / 4) if self.reap_timeout_s > 0 else 0.0
