"""KVTransfer port: the engine's KV blocks of one registration, mapped into this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_layout import RegisteredLayout


class KVTransfer(Protocol):
    """Copies between an engine's blocks and L1 extents for one registered instance.

    Threading: one instance's copies arrive on one affinity thread, in order; different instances copy
    concurrently. Implementations keep no state between calls beyond their mappings.

    Ownership: the extents belong to the L1 manager; the caller holds a write reservation (`gather`) or a
    read lock (`scatter`) on each for the duration of the call.

    Failure: a block id outside the engine's blocks, or a block list shorter than the chunks need, raises
    IndexError before anything is copied; any other copy that cannot be done (unmapped memory) raises too.
    The caller then aborts the reservations it took, so nothing half-written becomes visible.
    """

    @property
    def layout(self) -> RegisteredLayout:
        """The object layout this registration was built for."""
        ...

    def gather(
        self, block_ids: Sequence[Sequence[int]], chunks: Sequence[int], extents: Sequence[Extent]
    ) -> None:
        """Copy chunk `chunks[i]` of the request range (its blocks from every block list) into `extents[i]`.

        `block_ids[g]` lists block list g's blocks for the whole range; chunk c uses its slice
        `[c * bpc, (c + 1) * bpc)`.
        """
        ...

    def scatter(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int = 0,
    ) -> None:
        """Copy `extents[i]` back into the blocks of chunk `chunks[i]`.

        The range's first `skip_tokens` tokens (whole blocks, rounded down) are left untouched.
        """
        ...

    def close(self) -> None:
        """Unmap the engine's memory (never unlinks the engine's segments); idempotent."""
        ...
