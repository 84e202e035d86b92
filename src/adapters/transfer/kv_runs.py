"""Copy planning for KV transfers: which chunks of a request can move together in one strided copy.

A run is a stretch of consecutive chunks whose engine blocks form one ascending range and whose L1
extents lie a constant stride apart; its bytes move with one `copy_` per layer and plane. A chunk whose
blocks are scattered, or whose leading blocks are skipped (`skip_first_n_tokens`), is a run of one.
The block table is checked with numpy in one pass; the only Python loop is over chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("Run", "plan_runs")


@dataclass(frozen=True, slots=True)
class Run:
    """Chunks `[chunk, chunk + count)` of the request range, moved together.

    Attributes:
        chunk: Index (in the request range) of the first chunk.
        count: Chunks in the run.
        offset: Arena offset of the first chunk's extent.
        stride: Bytes from one chunk's extent to the next (0 for a run of one).
        block: First engine block of the run, or -1 when the (single) chunk's blocks are scattered.
        skip: Leading blocks of the (single) chunk left untouched.
        position: Index of the first chunk in the caller's `chunks` / `extents` lists.
    """

    chunk: int
    count: int
    offset: int
    stride: int
    block: int
    skip: int = 0
    position: int = 0


def plan_runs(
    ids: np.ndarray, chunks: Sequence[int], offsets: Sequence[int], bpc: int, skip_blocks: int = 0
) -> list[Run]:
    """Group `chunks` (ascending chunk indices, extents at `offsets`) into runs.

    Args:
        ids: The block ids of the whole request range for one block list.
        chunks: Chunk indices to move, in order.
        offsets: Arena offset of each chunk's extent.
        bpc: Engine blocks per chunk.
        skip_blocks: Leading blocks of the range left untouched (wholly skipped chunks are dropped).
    """
    if not chunks:
        return []
    index = np.asarray(chunks, dtype=np.int64)
    table = ids[(index * bpc)[:, None] + np.arange(bpc, dtype=np.int64)]
    ascending = (np.diff(table, axis=1) == 1).all(axis=1).tolist()
    starts = table[:, 0].tolist()
    skips = np.clip(skip_blocks - index * bpc, 0, bpc).tolist()
    runs: list[Run] = []
    last = -1
    for pos, chunk in enumerate(chunks):
        skip = skips[pos]
        if skip >= bpc:
            continue
        block = starts[pos] if ascending[pos] else -1
        offset = offsets[pos]
        if runs and not skip and _extends(runs[-1], chunk, block, offset - last, bpc):
            prev = runs[-1]
            runs[-1] = Run(
                prev.chunk, prev.count + 1, prev.offset, offset - last, prev.block, 0, prev.position
            )
        else:
            runs.append(Run(chunk, 1, offset, 0, block, skip, pos))
        last = offset
    return runs


def _extends(prev: Run, chunk: int, block: int, step: int, bpc: int) -> bool:
    """Whether a chunk (first block `block`, extent `step` bytes after the previous one) continues `prev`."""
    return (
        block >= 0
        and prev.block >= 0
        and not prev.skip
        and chunk == prev.chunk + prev.count
        and block == prev.block + prev.count * bpc
        and step > 0
        and (prev.count == 1 or step == prev.stride)
    )
