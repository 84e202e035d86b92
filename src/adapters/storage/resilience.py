"""Deadlines and a circuit breaker around any L2 adapter; the L2 factory wraps every adapter it builds.

Why a wrapper applied by the factory rather than code inside each adapter: one implementation covers
every backend, user plugins included, adapters stay about their storage, and a test can put a fake clock
under the breaker without a real backend. The breaker learns of failures three ways: the call raised
(plugins, bugs), the call missed its deadline, or the adapter's `counters.backend_errors` grew during
the call (adapters turn backend errors into misses per the port, and count them).

Breaker: `failure_threshold` consecutive failures open it; while open every call answers at once with
the failure value (all-miss, False, an empty page, the last usage seen) without touching the backend.
After a backoff (doubling from `base_backoff_s` to `max_backoff_s`) one call goes through as a probe:
success closes the breaker, failure reopens it with the next backoff. Every state change is logged and
counted in `breaker.transitions`. `unlock` and `close` always go through (unlock only releases local pins).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lmcache.adapters.storage._adapter_state import AdapterCounters
from lmcache.adapters.system_clock import SystemClock
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.clock import Clock
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("CircuitBreaker", "ResilientL2Adapter")

logger = logging.getLogger(__name__)
State = Literal["closed", "open", "half_open"]
T = TypeVar("T")


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open probe after a backoff -> closed or open."""

    def __init__(
        self,
        clock: Clock,
        name: str = "L2",
        failure_threshold: int = 5,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.clock = clock
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.state: State = "closed"
        self.transitions: Counter[State] = Counter()
        self.backoff_s = base_backoff_s
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def _move(self, state: State) -> None:
        if state != self.state:
            log = logger.warning if state == "open" else logger.info
            log("L2 adapter %s: circuit breaker %s -> %s", self.name, self.state, state)
            self.state = state
            self.transitions[state] += 1

    def allow(self) -> bool:
        """Whether a call may go to the backend now (in half-open state: the single probe)."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock.monotonic() >= self._open_until:
            self._move("half_open")
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker and reset the backoff."""
        self._failures = 0
        self._probing = False
        self.backoff_s = self.base_backoff_s
        self._move("closed")

    def record_failure(self) -> None:
        """A call failed: count it; open the breaker at the threshold or when a probe failed."""
        self._failures += 1
        if self.state == "half_open":
            self._probing = False
            self.backoff_s = min(self.max_backoff_s, self.backoff_s * 2)
            self._open()
        elif self.state == "closed" and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._open_until = self.clock.monotonic() + self.backoff_s
        self._move("open")


class ResilientL2Adapter:
    """Puts a deadline on every call of `inner` and a circuit breaker in front of it."""

    def __init__(
        self,
        inner: L2Adapter,
        name: str = "L2",
        clock: Clock | None = None,
        deadline_s: float = 5.0,
        store_deadline_s: float = 30.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.inner = inner
        self.deadline_s = deadline_s
        self.store_deadline_s = store_deadline_s
        self.breaker = breaker or CircuitBreaker(clock or SystemClock(), name)
        self.deadline_misses = 0
        self.short_circuited = 0
        self._last_usage = L2Usage(0, 0)

    @property
    def counters(self) -> AdapterCounters:
        """The inner adapter's counters (a fresh set when it keeps none)."""
        counters = getattr(self.inner, "counters", None)
        return counters if isinstance(counters, AdapterCounters) else AdapterCounters()

    async def _call(self, make: Callable[[], Awaitable[T]], fail: T, deadline: float, op: str) -> T:
        if not self.breaker.allow():
            self.short_circuited += 1
            return fail
        before = self.counters.backend_errors
        settled = False
        try:
            result = await asyncio.wait_for(make(), deadline)
        except TimeoutError:
            self.deadline_misses += 1
            logger.warning("L2 adapter %s: %s missed its %.1f s deadline", self.breaker.name, op, deadline)
            return fail
        except Exception as exc:
            logger.warning("L2 adapter %s: %s raised %r", self.breaker.name, op, exc)
            return fail
        else:
            settled = True
            if self.counters.backend_errors > before:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            return result
        finally:
            if not settled:  # a timeout, an exception or the caller's cancellation
                self.breaker.record_failure()

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Store under `store_deadline_s`; all False when open or late."""
        fail = [False] * len(keys)
        return await self._call(lambda: self.inner.store(keys, buffers), fail, self.store_deadline_s, "store")

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Lookup under the deadline; all-miss when open or late."""
        fail = [False] * len(keys)
        return await self._call(lambda: self.inner.lookup_and_lock(keys), fail, self.deadline_s, "lookup")

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Load under the deadline; all-miss when open or late."""
        fail = [False] * len(keys)
        return await self._call(lambda: self.inner.load(keys, buffers), fail, self.deadline_s, "load")

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Always forwarded (local pins), under the deadline."""
        try:
            await asyncio.wait_for(self.inner.unlock(keys), self.deadline_s)
        except Exception as exc:
            logger.warning("L2 adapter %s: unlock failed: %r", self.breaker.name, exc)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Delete under the deadline; nothing deleted when open or late."""
        fail = [False] * len(keys)
        return await self._call(lambda: self.inner.delete(keys), fail, self.deadline_s, "delete")

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """List under the deadline; an empty last page when open or late."""
        page = lambda: self.inner.list_keys(cursor, limit)  # noqa: E731
        return await self._call(page, KeyPage(()), self.deadline_s, "list")

    async def usage(self) -> L2Usage:
        """Usage under the deadline; the last answer seen when open or late."""
        self._last_usage = await self._call(self.inner.usage, self._last_usage, self.deadline_s, "usage")
        return self._last_usage

    async def close(self) -> None:
        """Always forwarded, without a deadline (it flushes stores in flight)."""
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Adapter-specific attributes (objects, base, url, ...) stay reachable through the wrapper.
        return getattr(self.inner, name)
