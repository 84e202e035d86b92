"""Pieces every L2 adapter shares: counters, local read pins, in-flight tracking for `close()`.

Locks (`lookup_and_lock`) are local pins: they keep an adapter's own capacity logic from dropping an
object a reader is about to load. They cannot stop another server from deleting a shared object, so
`delete` removes at once in every adapter here, and a load of a deleted object is simply a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lmcache.adapters.storage.object_format import (
    CorruptObjectError,
    UnusableObjectError,
    decode_into,
    encode_header,
)
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    import logging
    import threading
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
    from concurrent.futures import Executor

    from lmcache.domain.keys import ObjectKey

__all__ = (
    "AdapterCounters",
    "InFlight",
    "LockTable",
    "damaged_keys",
    "decode_all",
    "encode_all",
    "find_layer",
    "loaded",
    "offload",
    "page_of",
    "run_jobs",
    "sizes_of",
    "tally_loads",
    "usage_by_salt",
)

_OFFLOAD_BYTES = 1 << 20  # hashing and copying less than this stays on the event loop
T = TypeVar("T")


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


async def offload(nbytes: int, fn: Callable[..., T], *args: object) -> T:
    """Run CPU-heavy `fn` (hashing, copying: both release the GIL) off the event loop when `nbytes` is large.

    On cancellation it waits for the thread before re-raising: `fn` may be writing into a caller's buffer,
    which the caller must not reuse until that stops.
    """
    if nbytes < _OFFLOAD_BYTES:
        return fn(*args)
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.gather(future, return_exceptions=True)
        raise


def encode_all(keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bytes]:
    """Whole stored objects (header + payload), one bulk join each."""
    return [b"".join((encode_header(k, b), b)) for k, b in zip(keys, buffers, strict=True)]


def encode_headers(keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bytes]:
    """The header of each object (its payload is sent as is, after it)."""
    return [encode_header(k, b) for k, b in zip(keys, buffers, strict=True)]


# A load's outcome per key: True (the payload size, for `load_sized`), False for a miss, or the failed check.
Outcome = CorruptObjectError | bool | int


def decode_all(
    keys: Sequence[ObjectKey],
    blobs: Sequence[bytes | None],
    buffers: Sequence[memoryview],
    exact: bool = True,
) -> list[Outcome]:
    """Verify and copy each blob into its buffer.

    Returns:
        Per blob: True (the payload size unless `exact`), False for a missing blob, or the failed check.
    """
    out: list[Outcome] = []
    for key, blob, buf in zip(keys, blobs, buffers, strict=True):
        if blob is None:
            out.append(False)
            continue
        try:
            size = decode_into(key, blob, buf, exact)
            out.append(True if exact else size)
        except CorruptObjectError as exc:
            out.append(exc)
    return out


def loaded(outcome: object) -> bool:
    """Whether an outcome is a successful load (True, or a payload size)."""
    return outcome is True or (isinstance(outcome, int) and not isinstance(outcome, bool))


def tally_loads(
    counters: AdapterCounters,
    keys: Sequence[ObjectKey],
    outcomes: Sequence[Outcome],
    log: logging.Logger,
    name: str,
) -> list[bool]:
    """Count load outcomes (on the event loop thread) and turn them into the port's answers."""
    for key, outcome in zip(keys, outcomes, strict=True):
        counters.loads += 1
        if not loaded(outcome):
            counters.load_misses += 1
        if isinstance(outcome, CorruptObjectError):
            counters.corrupt += 1
            log.warning("%s L2: corrupt object %s: %s", name, key.short(), outcome)
    return [loaded(outcome) for outcome in outcomes]


def sizes_of(outcomes: Sequence[object]) -> list[int | None]:
    """`load_sized` answers from outcomes that carry payload sizes (anything else is a miss)."""
    return [o if loaded(o) and o is not True else None for o in outcomes]  # type: ignore[misc]


def damaged_keys(keys: Sequence[ObjectKey], outcomes: Sequence[Outcome]) -> list[ObjectKey]:
    """The keys whose stored bytes failed a check (to quarantine); other misses are left alone."""
    return [
        key
        for key, outcome in zip(keys, outcomes, strict=True)
        if isinstance(outcome, CorruptObjectError) and not isinstance(outcome, UnusableObjectError)
    ]


async def quarantine_remote(
    delete: Callable[[Sequence[ObjectKey]], Awaitable[list[bool]]],
    counters: AdapterCounters,
    keys: Sequence[ObjectKey],
    log: logging.Logger,
    name: str,
) -> None:
    """Delete damaged objects from a remote store, so no later lookup finds them again (counted once)."""
    if not keys:
        return
    removed = await delete(keys)
    counters.quarantined += sum(removed)
    log.warning("%s L2: deleted %d damaged object(s) so later lookups miss at once", name, sum(removed))


async def run_jobs(
    pool: Executor,
    jobs: list[Callable[[], Any]],
    cancelled: threading.Event,
    settle: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """Run blocking jobs on `pool` (results or exceptions, in order).

    On cancellation it sets `cancelled` (jobs not started yet skip their work) and waits for the running
    ones, which may still touch the caller's buffers, before re-raising. `settle` sees the results in both
    cases, so work finished before a cancellation (a file renamed into place) is still accounted for.
    """
    loop = asyncio.get_running_loop()
    gathered: Awaitable[list[Any]] = asyncio.gather(
        *(loop.run_in_executor(pool, job) for job in jobs), return_exceptions=True
    )
    try:
        results = await asyncio.shield(gathered)
    except asyncio.CancelledError:
        cancelled.set()
        results = await gathered
        if settle is not None:
            settle(results)
        raise
    if settle is not None:
        settle(results)
    return results


def find_layer(adapter: object, method: str) -> Any | None:
    """The first layer down an adapter's wrapper chain (`inner`) whose class defines `method`, or None.

    The class, not the object: the resilience wrapper forwards unknown attributes to what it wraps.
    """
    seen: set[int] = set()
    layer: object | None = adapter
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if callable(getattr(type(layer), method, None)):
            return layer
        layer = getattr(layer, "inner", None)
    return None
