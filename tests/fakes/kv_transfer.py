"""FakeKVTransfer: a KVTransfer over an in-process engine (a dict of blocks), copying into an L1Memory.

An object is, for each kernel group at its `offset` in the layout, the chunk's blocks back to back. That is
not the token-major byte order of the real adapters (test_cpu_kv_transfer.py checks that against a
reference); what the fake keeps is the contract: the same bytes go back where they came from, block ids
are checked, skipped blocks stay untouched and a copy that fails raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_layout import KernelGroup, RegisteredLayout
    from lmcache.ports.kv_transfer import KVTransfer
    from lmcache.ports.l1_memory import L1Memory


def block_bytes(group: KernelGroup) -> int:
    """Bytes of one engine block of a kernel group (all its layers and planes)."""
    return group.nbytes // group.blocks_per_chunk


class FakeKVTransfer:
    """Copies between `blocks[(kernel group, block id)]` and extents of `memory`; records what it moved.

    Blocks absent from `blocks` read as zeros. Faults: `fail_next(n)` makes the next n calls raise half way
    through (a half-done copy, as a real fault leaves it). Counters: `gathered` and `scattered` chunks,
    `closed`.
    """

    def __init__(self, layout: RegisteredLayout, memory: L1Memory) -> None:
        self._layout = layout
        self._memory = memory
        self.blocks: dict[tuple[int, int], bytes] = {}
        self.gathered = 0
        self.scattered = 0
        self.closed = False
        self._fail = 0

    @property
    def layout(self) -> RegisteredLayout:
        return self._layout

    def fail_next(self, n: int = 1) -> None:
        self._fail += n

    def gather(
        self, block_ids: Sequence[Sequence[int]], chunks: Sequence[int], extents: Sequence[Extent]
    ) -> None:
        plan = self._plan(block_ids, chunks, extents, 0)
        for n, (group, view_at, block, _) in enumerate(plan):
            self._maybe_fail(n, plan)
            size = block_bytes(group)
            data = self.blocks.get((group.index, block), bytes(size))
            self._memory.view(view_at, size)[:] = data
        self.gathered += len(chunks)

    def scatter(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int = 0,
    ) -> None:
        plan = self._plan(block_ids, chunks, extents, max(0, skip_tokens))
        for n, (group, view_at, block, skipped) in enumerate(plan):
            self._maybe_fail(n, plan)
            if not skipped:
                self.blocks[(group.index, block)] = bytes(self._memory.view(view_at, block_bytes(group)))
        self.scattered += len(chunks)

    def close(self) -> None:
        self.closed = True

    def _maybe_fail(self, n: int, plan: list[tuple[KernelGroup, int, int, bool]]) -> None:
        """Raise half way through the copy, when a fault is armed."""
        if self._fail and n == len(plan) // 2:
            self._fail -= 1
            raise RuntimeError("injected KV transfer fault")

    def _plan(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int,
    ) -> list[tuple[KernelGroup, int, int, bool]]:
        """(group, arena offset, block id, skipped) per block to move; raises before anything moves."""
        if self.closed:
            raise RuntimeError("transfer is closed")
        if len(chunks) != len(extents):
            raise ValueError(f"{len(chunks)} chunks for {len(extents)} extents")
        need = self._layout.object_bytes
        plan = []
        for chunk, extent in zip(chunks, extents, strict=True):
            if extent.size < need:
                raise ValueError(f"an extent of {extent.size} bytes cannot hold a {need}-byte object")
            for group in self._layout.groups:
                bpc, size = group.blocks_per_chunk, block_bytes(group)
                skip_blocks = skip_tokens // (self._layout.chunk_size // bpc)  # whole blocks only
                ids = block_ids[group.block_list][chunk * bpc : (chunk + 1) * bpc]
                if len(ids) != bpc:
                    raise IndexError(f"chunk {chunk} needs {bpc} block ids of list {group.block_list}")
                for j, block in enumerate(ids):
                    if not 0 <= block < group.geometry.num_blocks:
                        raise IndexError(f"block id {block} outside 0..{group.geometry.num_blocks - 1}")
                    at = extent.offset + group.offset + j * size
                    plan.append((group, at, block, chunk * bpc + j < skip_blocks))
        return plan


def _conforms(fake: FakeKVTransfer) -> KVTransfer:
    return fake
