"""L1Memory port: the bytes behind the arena the domain accounts for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class L1Memory(Protocol):
    """One contiguous arena of `size_bytes` bytes, addressed by (offset, size) extents.

    The domain allocates extents (domain/arena.py) and asks this port for views; it never holds the bytes.

    Threading: `view` is called from any thread (transfer workers, the storage event loop) and must not
    block beyond mapping a page range. Callers synchronise access to one extent through the L1 manager's
    locks: a write-locked extent has one writer, a read-locked one only readers.

    Ownership: a returned view aliases the arena (zero copy) and stays valid until `close`; it is only
    meaningful while the caller holds a lock on the object owning the extent.

    Failure: `view` raises ValueError for an extent outside the arena; `view` and `tensor` raise
    RuntimeError once the arena is closed; `close` is idempotent and releases the memory (unmapping,
    unlinking a shared segment it created).
    """

    @property
    def size_bytes(self) -> int:
        """Arena size in bytes."""
        ...

    @property
    def address(self) -> int:
        """The arena's first byte in this process (for native clients that register memory)."""
        ...

    @property
    def tensor(self) -> torch.Tensor:
        """The whole arena as one 1-D uint8 CPU tensor over the same bytes as `view` (no copy).

        The transfer adapters copy through it with vectorised tensor ops; the domain never touches it.
        Made on the first call where torch loads lazily (adapters/lazy_torch.py), so start-up never asks.

        Raises:
            RuntimeError: When the arena is closed.
        """
        ...

    def view(self, offset: int, size: int) -> memoryview:
        """A writable, byte-addressed view of `[offset, offset + size)`.

        Raises:
            ValueError: When the range lies outside the arena.
        """
        ...

    def close(self) -> None:
        """Release the arena; views become invalid. Safe to call twice."""
        ...
