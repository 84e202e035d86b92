"""L2Adapter port: one tier of the L2 cascade (fs, mock, resp, s3, ...), asynchronous.

Every method works on batches of keys so a backend can pipeline (one Redis round trip, one thread-pool
hop) instead of paying per object. Results are per key and in the order of the keys given.

Departure from conventions.md §6, whose sketch stores one key per call: batching is what lets the Redis
and S3 backends pipeline, and a one-key call is just a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of an adapter's key listing.

    Attributes:
        keys: Keys of this page (complete objects only).
        next_cursor: Opaque cursor for the next page; None when this was the last page.
    """

    keys: tuple[ObjectKey, ...]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class L2Usage:
    """An adapter's usage: bytes and objects held, and its capacity (0 = unknown or unbounded)."""

    used_bytes: int
    objects: int
    capacity_bytes: int = 0
    by_salt: dict[str, int] = field(default_factory=dict)


class L2Adapter(Protocol):
    """One L2 tier; all methods are coroutines on the storage event loop.

    Threading: called only from the storage event loop thread; an adapter with a blocking client runs it
    in a thread (`asyncio.to_thread` or its own executor) and never blocks the loop. Calls may overlap
    (several stores and loads in flight); each method must be safe against that.

    Buffers: the `memoryview`s passed to `store` and `load` alias L1 extents. The caller keeps them locked
    (read lock for `store`, write reservation for `load`) until the coroutine returns or is cancelled;
    the adapter must not keep a reference after that.

    Failure: backend errors never raise out of these methods (except `close`); they are logged and counted
    by the adapter and reported as False / a miss, so one bad tier cannot stall the cascade. Callers also
    wrap every call in a deadline and cancel it: an adapter must tolerate cancellation at any await point
    without corrupting its state, and must not leave a key both locked and unknown to the caller for longer
    than its own lock timeout.

    Keys: the full `ObjectKey` (cache_salt included) is the identity; two keys differing only in
    cache_salt are different objects.
    """

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Persist objects; each becomes visible to `lookup_and_lock` only once complete.

        Args:
            keys: Objects to store.
            buffers: One view per key with the object's bytes (read-locked by the caller).

        Returns:
            Per key: True when stored or already present (idempotent), False on failure.
        """
        ...

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Report which keys are present, and pin those so they are not deleted until `unlock`.

        Returns:
            Per key: True when present and now locked for one reader.
        """
        ...

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Copy objects into the given buffers (exactly the stored size each).

        Args:
            keys: Objects to read, normally locked by `lookup_and_lock` first.
            buffers: One writable view per key; the caller holds a write reservation on each.

        Returns:
            Per key: True when the full object was copied and verified (checksum); False on a miss, a
            size mismatch or corruption; a False buffer's content is unspecified.
        """
        ...

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Release one lock taken by `lookup_and_lock` per key; unknown or unlocked keys are ignored."""
        ...

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Remove objects (locked ones once unlocked, or at once: the adapter documents which).

        Returns:
            Per key: True when the key was present and is now removed.
        """
        ...

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """List stored keys one page at a time, in a stable order.

        Args:
            cursor: None for the first page, else `next_cursor` of the previous page.
            limit: Maximum keys in the page (>= 1).
        """
        ...

    async def usage(self) -> L2Usage:
        """Current usage (may be approximate for remote stores)."""
        ...

    async def close(self) -> None:
        """Flush writes in flight and release connections and files. Idempotent; may raise on failure."""
        ...


class SizedLoadL2Adapter(L2Adapter, Protocol):
    """An L2 tier that can also load objects whose size the caller does not know in advance.

    Optional: the built-in fs, mock, resp and s3 adapters (and fault_inject over one of them) have it;
    the serde wrapper needs it, since a compressed object's stored size varies. Same threading, buffer
    and failure rules as `L2Adapter.load`.
    """

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """Copy each object's payload into the start of its buffer, which may be larger than the payload.

        Returns:
            Per key: the payload's size (its bytes are `buffer[:size]`, verified), or None on a miss, a
            payload larger than the buffer, or corruption (counted and quarantined as by `load`).
        """
        ...
