"""State every L2 adapter keeps: counters, local read pins, in-flight tracking for `close()`, listings.

Locks (`lookup_and_lock`) are local pins: they keep an adapter's own capacity logic from dropping an
object a reader is about to load. They cannot stop another server from deleting a shared object, so
`delete` removes at once in every adapter here, and a load of a deleted object is simply a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = (
    "AdapterCounters",
    "InFlight",
    "LockTable",
    "empty_page",
    "page_of",
    "record_stores",
    "tracked",
    "usage_by_salt",
)


@dataclass
class AdapterCounters:
    """What an adapter counts; `backend_errors` also feeds the circuit breaker (resilience.py)."""

    stores: int = 0
    store_failures: int = 0
    loads: int = 0
    load_misses: int = 0
    corrupt: int = 0
    quarantined: int = 0
    backend_errors: int = 0
    capacity_rejections: int = 0


class LockTable:
    """Reader pins per key (a multiset); not thread-safe (the event loop owns it)."""

    def __init__(self) -> None:
        self._pins: Counter[ObjectKey] = Counter()

    def lock(self, keys: Sequence[ObjectKey], present: Sequence[bool]) -> list[bool]:
        """Pin every present key once; returns `present` as a list."""
        self._pins.update(k for k, ok in zip(keys, present, strict=True) if ok)
        return list(present)

    def unlock(self, keys: Iterable[ObjectKey]) -> None:
        """Drop one pin per key; unknown keys are ignored."""
        for key in keys:
            left = self._pins.get(key, 0) - 1
            if left > 0:
                self._pins[key] = left
            else:
                self._pins.pop(key, None)

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader holds a pin on `key`."""
        return key in self._pins


class InFlight:
    """Counts operations in flight so `close()` can wait for them, and refuses new ones once closing."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Wrap one operation."""
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def drain(self) -> None:
        """Refuse new operations and wait until the running ones finish."""
        self.closing = True
        await self._idle.wait()


_Batch = TypeVar("_Batch", bound="Callable[..., Awaitable[list[Any]]]")


def tracked(miss: object) -> Callable[[_Batch], _Batch]:
    """Wrap a batch method `(self, keys, ...)` in `self._inflight.track()`, so `close()` waits for it.

    Once the adapter is closing a batch is refused (`miss` per key) without touching the backend, and an
    empty batch is answered at once, so no backend sees an empty call.
    """

    def wrap(method: _Batch) -> _Batch:
        @functools.wraps(method)
        async def run(self: Any, keys: Sequence[ObjectKey], *args: Any) -> list[Any]:
            inflight: InFlight = self._inflight
            if inflight.closing or not keys:
                return [miss] * len(keys)
            async with inflight.track():
                return await method(self, keys, *args)

        return cast("_Batch", run)

    return wrap


def page_of(names: Sequence[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """One page of a sorted name list, the cursor being the last name of the previous page."""
    import bisect

    start = bisect.bisect_right(names, cursor) if cursor else 0
    page = list(names[start : start + max(1, limit)])
    nxt = page[-1] if page and start + len(page) < len(names) else None
    return page, nxt


def usage_by_salt(sizes: Iterable[tuple[ObjectKey, int]]) -> tuple[int, int, dict[str, int]]:
    """Sum (key, bytes) pairs into (total bytes, objects, bytes per cache_salt)."""
    by_salt: Counter[str] = Counter()
    count = 0
    for key, size in sizes:
        by_salt[key.cache_salt] += size
        count += 1
    return sum(by_salt.values()), count, dict(by_salt)


def empty_page() -> KeyPage:
    """A page with no keys and no continuation."""
    return KeyPage((), None)


def record_stores(
    counters: AdapterCounters, keys: Sequence[ObjectKey], out: list[bool], stored: set[ObjectKey] | None
) -> list[bool]:
    """Count a batch's stores and failures; returns `out`.

    `stored`, when given, collects the stored keys: this run's objects, deleted at close by an adapter
    that does not persist them.
    """
    counters.stores += sum(out)
    counters.store_failures += len(out) - sum(out)
    if stored is not None:
        stored.update(k for k, ok in zip(keys, out, strict=True) if ok)
    return out
