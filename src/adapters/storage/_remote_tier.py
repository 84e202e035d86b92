"""What the remote object-store adapters (aerospike, hfbucket, mooncake_store, native_plugin, resp, s3) share.

They differ only in the client they call. Around those calls they answer alike, so it is written once
here: local read pins, this run's objects deleted at close unless `persist_enabled`, a failed client
call counted as a backend error (the circuit breaker's input) and logged naming the store, damaged
objects deleted so no later lookup finds them, listings and usage built from (name, size) pairs.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import TYPE_CHECKING

from lmcache.adapters.storage._adapter_mixins import CountedLoads, PinnedReads
from lmcache.adapters.storage._adapter_state import (
    AdapterCounters,
    InFlight,
    LockTable,
    record_stores,
    usage_by_salt,
)
from lmcache.adapters.storage._load_outcomes import damaged_keys, quarantine_remote
from lmcache.adapters.storage.object_format import parse_key_name
from lmcache.domain.units import gb_to_bytes
from lmcache.ports.l2_adapter import L2Usage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from lmcache.adapters.storage._load_outcomes import Outcome
    from lmcache.domain.keys import ObjectKey

__all__ = ("RemoteTier", "named_keys", "parse_names")


def named_keys(names: Iterable[str]) -> list[tuple[ObjectKey, str]]:
    """(key, name) of each object name; names that are not ours (another tool's objects) are skipped."""
    pairs = []
    for name in names:
        try:
            pairs.append((parse_key_name(name), name))
        except ValueError:
            continue
    return pairs


def parse_names(names: Iterable[str]) -> list[ObjectKey]:
    """The keys behind object names, skipping names that are not ours."""
    return [key for key, _ in named_keys(names)]


class RemoteTier(PinnedReads, CountedLoads):
    """State and answers shared by the remote adapters; subclasses call `_init_tier` and talk to a client."""

    where: str  # the store in log lines: a bucket, a URL, hosts

    def _init_tier(self, where: str, max_capacity_gb: float, persist_enabled: bool) -> None:
        self.where = where
        self.capacity_bytes = gb_to_bytes(max_capacity_gb)
        self.persist = persist_enabled
        self.counters = AdapterCounters()
        self._locks = LockTable()
        self._inflight = InFlight()
        self._stored: set[ObjectKey] = set()
        self._closed = False

    @property
    def _log(self) -> logging.Logger:
        return logging.getLogger(type(self).__module__)

    def _error(self, op: str, exc: BaseException | str) -> None:
        """Count and log a failed client call (a string: what the client answered instead of raising)."""
        self.counters.backend_errors += 1
        detail = exc if isinstance(exc, str) else repr(exc)
        self._log.warning("%s L2 %s: %s failed: %s", self.kind, self.where, op, detail)

    async def _answers(
        self, op: str, keys: Sequence[ObjectKey], call: Callable[[], Awaitable[Sequence[object]]]
    ) -> list[bool]:
        """The per-key answers of one client call for a whole batch (none for no keys).

        A call that raises, or answers for another number of keys, is a backend error: all False.
        """
        if not keys:
            return []
        try:
            out = [bool(x) for x in await call()]
            if len(out) != len(keys):
                raise ValueError(f"{len(out)} answers for {len(keys)} keys")
        except Exception as exc:
            self._error(op, exc)
            return [False] * len(keys)
        return out

    def _stores_done(self, keys: Sequence[ObjectKey], out: list[bool]) -> list[bool]:
        """Count a batch's stores; this run's objects are remembered for close unless persisted."""
        return record_stores(self.counters, keys, out, None if self.persist else self._stored)

    async def _quarantine(self, keys: Sequence[ObjectKey], outcomes: list[Outcome]) -> list[Outcome]:
        """Delete the objects whose load failed a check; returns `outcomes`."""
        damaged = damaged_keys(keys, outcomes)
        await quarantine_remote(self.delete, self.counters, damaged, self._log, self.kind)
        return outcomes

    def _usage_of(self, sizes: Iterable[tuple[ObjectKey, int]]) -> L2Usage:
        """Usage from (key, stored bytes) pairs, against this adapter's configured capacity."""
        used, count, by_salt = usage_by_salt(sizes)
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    @abstractmethod
    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Remove objects from the store (at once)."""

    @abstractmethod
    async def _release(self) -> None:
        """Let go of the client, its threads and connections (once, at close)."""

    async def close(self) -> None:
        """Finish calls in flight, delete this run's objects unless `persist_enabled`, release the client."""
        if self._closed:
            return
        await self._inflight.drain()
        if self._stored:
            await self.delete(list(self._stored))
        await self._release()
        self._closed = True
