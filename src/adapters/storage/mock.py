"""mock: an in-memory L2 tier, bounded by `max_size_gb`, moving bytes at `mock_bandwidth_gb` GB/s.

The bandwidth is a token bucket (token_bucket.py): each batch reserves its bytes and sleeps for the debt,
so concurrent transfers share the rate and nothing busy-waits. Objects are kept in the shared object
format (object_format.py) and verified on load like any real backend, so corruption tests apply.
A store that does not fit is refused (counted in `capacity_rejections`); nothing is evicted here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_mixins import PinnedReads, SizedLoads
from lmcache.adapters.storage._adapter_state import (
    AdapterCounters,
    InFlight,
    LockTable,
    page_of,
    tracked,
    usage_by_salt,
)
from lmcache.adapters.storage.object_format import (
    CorruptObjectError,
    UnusableObjectError,
    decode_into,
    encode_header,
    key_name,
)
from lmcache.adapters.storage.token_bucket import TokenBucket
from lmcache.adapters.system_clock import SystemClock
from lmcache.domain.units import GIB, gb_to_bytes
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.clock import Clock

__all__ = ("MockL2Adapter",)

logger = logging.getLogger(__name__)
_BURST_SECONDS = 0.01  # the bucket holds 10 ms worth of bandwidth


class MockL2Adapter(PinnedReads, SizedLoads):
    """In-memory L2 tier with simulated bandwidth.

    `objects` maps each key to its stored bytes (header + payload); tests may tamper with it.
    """

    def __init__(
        self,
        max_size_gb: float,
        mock_bandwidth_gb: float,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.capacity_bytes = gb_to_bytes(max_size_gb)
        rate = mock_bandwidth_gb * GIB  # the spec's GB are binary (domain/units.py)
        self._bucket = TokenBucket(rate, rate * _BURST_SECONDS, clock or SystemClock())
        self.objects: dict[ObjectKey, bytearray] = {}
        self.counters = AdapterCounters()
        self._locks = LockTable()
        self._inflight = InFlight()
        self._used = 0

    async def _transfer(self, nbytes: int) -> None:
        delay = self._bucket.reserve(nbytes)
        if delay > 0:
            await asyncio.sleep(delay)

    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Store objects (copies the bytes once the simulated transfer time has passed)."""
        await self._transfer(sum(buf.nbytes for buf in buffers))
        # No await below: the caller's buffers are read only while it still holds them.
        return [self._put(key, buf) for key, buf in zip(keys, buffers, strict=True)]

    def _put(self, key: ObjectKey, buf: memoryview) -> bool:
        if key in self.objects:
            return True
        blob = bytearray(encode_header(key, buf))
        if self._used + len(blob) + buf.nbytes > self.capacity_bytes:
            self.counters.capacity_rejections += 1
            self.counters.store_failures += 1
            return False
        blob += buf
        self.objects[key] = blob
        self._used += len(blob)
        self.counters.stores += 1
        return True

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Report and pin present keys."""
        return self._locks.lock(keys, [key in self.objects for key in keys])

    @tracked(None)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[int | None]:
        """Copy verified payloads into the buffers after the simulated transfer time."""
        await self._transfer(sum(buf.nbytes for buf in buffers))
        return [self._get(key, buf, exact) for key, buf in zip(keys, buffers, strict=True)]

    def _get(self, key: ObjectKey, buf: memoryview, exact: bool) -> int | None:
        self.counters.loads += 1
        blob = self.objects.get(key)
        if blob is None:
            self.counters.load_misses += 1
            return None
        try:
            return decode_into(key, blob, buf, exact)
        except CorruptObjectError as exc:
            self.counters.corrupt += 1
            self.counters.load_misses += 1
            if not isinstance(exc, UnusableObjectError):  # damaged: quarantined (dropped), so never re-read
                self._used -= len(self.objects.pop(key))
                self.counters.quarantined += 1
            logger.warning("mock L2: corrupt object %s: %s", key.short(), exc)
            return None

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Remove objects at once (pins do not defer deletion)."""
        out = []
        for key in keys:
            blob = self.objects.pop(key, None)
            if blob is not None:
                self._used -= len(blob)
            out.append(blob is not None)
        return out

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Keys ordered by object name; the cursor is the last name of the previous page."""
        by_name = {key_name(key): key for key in self.objects}
        names, nxt = page_of(sorted(by_name), cursor, limit)
        return KeyPage(tuple(by_name[name] for name in names), nxt)

    async def usage(self) -> L2Usage:
        """Exact usage (stored bytes including headers)."""
        used, count, by_salt = usage_by_salt((key, len(blob)) for key, blob in self.objects.items())
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    async def close(self) -> None:
        """Wait for transfers in flight; the objects stay readable until the adapter is dropped."""
        await self._inflight.drain()
