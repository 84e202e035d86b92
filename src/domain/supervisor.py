"""Supervision of background loops (eviction, store, prefetch, session expiry, worker reaper).

A loop is a step function run every `interval_s`. A step that raises is logged and counted, the loop is
marked down, and it is started again after `restart_delay_s`; it is reported healthy again only once a
step completes. `run_once` / `run_once_async` run one supervised step, so tests drive a loop by hand with
a fake clock; `start` runs every sync loop on its own daemon thread, `run_async` runs an async loop as a
task on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lmcache.ports.clock import Clock

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LoopHealth:
    """State of one supervised loop.

    Attributes:
        name: The loop's name (shown by /healthcheck and /status).
        healthy: False from a crash until the next step completes.
        runs: Completed steps.
        failures: Steps that raised (each one a restart).
        last_error: `repr` of the last exception, None if it never failed.
        last_ok_at: Clock time of the last completed step.
    """

    name: str
    healthy: bool = True
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None


@dataclass(slots=True)
class _Loop:
    health: LoopHealth
    interval_s: float
    step: Callable[[], object] | None = None
    async_step: Callable[[], Awaitable[object]] | None = None
    thread: threading.Thread | None = None


class Supervisor:
    """Runs and watches background loops; thread-safe.

    Args:
        clock: Time source for `last_ok_at`.
        restart_delay_s: Pause before a crashed loop runs again (real time, only in `start`/`run_async`).
    """

    def __init__(self, clock: Clock, restart_delay_s: float = 1.0) -> None:
        self._clock = clock
        self.restart_delay_s = restart_delay_s
        self._loops: dict[str, _Loop] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def add(self, name: str, step: Callable[[], object], interval_s: float) -> None:
        """Register a synchronous loop (run on its own thread by `start`)."""
        self._register(name, _Loop(LoopHealth(name), interval_s, step=step))

    def add_async(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float) -> None:
        """Register an asynchronous loop (run as a task by `run_async`)."""
        self._register(name, _Loop(LoopHealth(name), interval_s, async_step=step))

    def _register(self, name: str, loop: _Loop) -> None:
        with self._lock:
            if name in self._loops:
                raise ValueError(f"loop {name!r} is already supervised")
            self._loops[name] = loop

    def run_once(self, name: str) -> bool:
        """Run one supervised step of a sync loop; True when it completed, False when it raised."""
        loop = self._loops[name]
        if loop.step is None:
            raise ValueError(f"loop {name!r} is asynchronous; use run_once_async")
        try:
            loop.step()
        except Exception as exc:
            self._failed(loop, exc)
            return False
        self._completed(loop)
        return True

    async def run_once_async(self, name: str) -> bool:
        """Run one supervised step of an async loop; True when it completed, False when it raised."""
        loop = self._loops[name]
        if loop.async_step is None:
            raise ValueError(f"loop {name!r} is synchronous; use run_once")
        try:
            await loop.async_step()
        except Exception as exc:
            self._failed(loop, exc)
            return False
        self._completed(loop)
        return True

    def _failed(self, loop: _Loop, exc: Exception) -> None:
        with self._lock:
            loop.health.failures += 1
            loop.health.healthy = False
            loop.health.last_error = repr(exc)
        logger.exception("Background loop %s crashed; restarting it", loop.health.name)

    def _completed(self, loop: _Loop) -> None:
        with self._lock:
            loop.health.runs += 1
            loop.health.healthy = True
            loop.health.last_ok_at = self._clock.monotonic()

    def health(self) -> dict[str, LoopHealth]:
        """A snapshot per loop; a sync loop whose thread died is reported down."""
        with self._lock:
            out = {}
            for name, loop in self._loops.items():
                snap = LoopHealth(**{f: getattr(loop.health, f) for f in LoopHealth.__slots__})
                if loop.thread is not None and not loop.thread.is_alive() and not self._stop.is_set():
                    snap.healthy = False
                out[name] = snap
            return out

    @property
    def healthy(self) -> bool:
        """True when every loop is up."""
        return all(h.healthy for h in self.health().values())

    def start(self) -> None:
        """Start one daemon thread per sync loop."""
        self._stop.clear()
        for name, loop in self._loops.items():
            if loop.step is not None and (loop.thread is None or not loop.thread.is_alive()):
                loop.thread = threading.Thread(target=self._thread_main, args=(name,), name=f"lmcache-{name}")
                loop.thread.daemon = True
                loop.thread.start()

    def _thread_main(self, name: str) -> None:
        loop = self._loops[name]
        while not self._stop.is_set():
            ok = self.run_once(name)
            self._stop.wait(loop.interval_s if ok else self.restart_delay_s)

    async def run_async(self, name: str) -> None:
        """Run an async loop until `stop` (or cancellation), restarting it after each crash."""
        loop = self._loops[name]
        while not self._stop.is_set():
            ok = await self.run_once_async(name)
            await asyncio.sleep(loop.interval_s if ok else self.restart_delay_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask every loop to stop and join the threads."""
        self._stop.set()
        for loop in self._loops.values():
            if loop.thread is not None:
                loop.thread.join(timeout_s)
