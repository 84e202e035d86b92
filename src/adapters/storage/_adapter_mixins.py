"""Port methods that many L2 adapters answer the same way, written once.

`PinnedReads`: `is_locked` and `unlock` over the adapter's local read pins (`_locks`, a LockTable taken by
`lookup_and_lock`). `CountedLoads`: `load` and `load_sized` over the adapter's one `_load(keys, buffers,
exact)`, which returns per-key outcomes (see _load_outcomes.py); they are counted here once, and damage
is logged under the adapter's `kind`. `SizedLoads`: the same pair over a `_load` that counts its own
outcomes and returns payload sizes (None for a miss). `Forwarding`: the calls a wrapper around another
adapter (fault_inject, serde) passes on unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from lmcache.adapters.storage._load_outcomes import sizes_of, tally_loads

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.adapters.storage._adapter_state import AdapterCounters, LockTable
    from lmcache.adapters.storage._load_outcomes import Outcome
    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import KeyPage, L2Adapter, L2Usage

__all__ = ("CountedLoads", "Forwarding", "PinnedReads", "SizedLoads")


class PinnedReads:
    """`is_locked`/`unlock` of an adapter whose pins are one LockTable and never defer a delete."""

    _locks: LockTable

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader pinned `key` (a delete from the HTTP API skips it)."""
        return self._locks.is_locked(key)

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Drop one pin per key."""
        self._locks.unlock(keys)


class CountedLoads:
    """`load` and `load_sized` of an adapter that implements `_load(keys, buffers, exact)`."""

    kind: ClassVar[str]  # the adapter type, in log lines
    counters: AdapterCounters

    if TYPE_CHECKING:

        async def _load(
            self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
        ) -> list[Outcome]: ...

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Copy each object's verified payload into its buffer (exact sizes); a damaged object is a miss."""
        return self._tally(keys, await self._load(keys, buffers, True))

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """As `load`, each payload copied to the start of a buffer at least as large; returns the sizes."""
        outcomes = await self._load(keys, buffers, False)
        self._tally(keys, outcomes)
        return sizes_of(outcomes)

    def _tally(self, keys: Sequence[ObjectKey], outcomes: Sequence[Outcome]) -> list[bool]:
        return tally_loads(self.counters, keys, outcomes, logging.getLogger(type(self).__module__), self.kind)


class SizedLoads:
    """`load` and `load_sized` of an adapter whose `_load(keys, buffers, exact)` returns payload sizes."""

    if TYPE_CHECKING:

        async def _load(
            self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
        ) -> list[int | None]: ...

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Copy each object's verified payload into its buffer (exact sizes); a damaged object is a miss."""
        return [size is not None for size in await self._load(keys, buffers, True)]

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """As `load`, each payload copied to the start of a buffer at least as large; returns the sizes."""
        return await self._load(keys, buffers, False)


class Forwarding:
    """`unlock`, `delete`, `list_keys` and `usage` of a wrapper, passed to the adapter it wraps (`inner`)."""

    inner: L2Adapter

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Forwarded unchanged."""
        await self.inner.unlock(keys)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Forwarded unchanged."""
        return await self.inner.delete(keys)

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Forwarded unchanged."""
        return await self.inner.list_keys(cursor, limit)

    async def usage(self) -> L2Usage:
        """Forwarded unchanged (a serde's stored bytes: after the serde)."""
        return await self.inner.usage()
