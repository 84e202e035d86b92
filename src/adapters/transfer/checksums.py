"""Per-chunk digests of an engine's KV blocks (wire-protocol.md §7.1), as the bench compares them.

For each layer in registration order the listed blocks are gathered along the layer's block axis
(bfloat16 upcast to float32); chunk c's MD5 is fed, layer by layer, the C-contiguous bytes of its slice.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
else:
    from lmcache.adapters.lazy_torch import torch

__all__ = ("block_checksums", "block_id_ranges")

_GATHER_BUDGET = 64 << 20


def block_checksums(
    layers: Sequence[torch.Tensor],
    block_ids: Sequence[int],
    chunk_blocks: int,
    block_axis: int = 1,
    budget_bytes: int = _GATHER_BUDGET,
) -> list[str]:
    """Hex MD5 per chunk of `chunk_blocks` consecutive entries of `block_ids`.

    Blocks are gathered a few chunks at a time (at most about `budget_bytes` per gather), so the memory
    a request takes does not grow with the number of ids it names.
    """
    if chunk_blocks <= 0:
        raise ValueError("chunk_size (blocks per chunk) must be > 0")
    index = torch.as_tensor(list(block_ids), dtype=torch.int64)
    n = len(block_ids)
    digests = [hashlib.md5(usedforsecurity=False) for _ in range(0, n, chunk_blocks)]
    for layer in layers:
        block_bytes = max(1, layer.element_size() * layer.numel() // max(1, layer.shape[block_axis]))
        per_gather = max(1, budget_bytes // (block_bytes * chunk_blocks)) * chunk_blocks
        for start in range(0, n, per_gather):  # one gather per group of chunks, not per block
            picked = layer.index_select(block_axis, index[start : start + per_gather])
            if picked.dtype == torch.bfloat16:
                picked = picked.float()
            for offset in range(0, picked.shape[block_axis], chunk_blocks):
                part = picked.narrow(block_axis, offset, min(chunk_blocks, picked.shape[block_axis] - offset))
                digest = digests[(start + offset) // chunk_blocks]
                digest.update(part.contiguous().view(torch.uint8).numpy().tobytes())
    return [d.hexdigest() for d in digests]


def block_id_ranges(block_ids: Sequence[int]) -> list[int | list[int]]:
    """Runs of >= 3 consecutive ids become `[first, last]`: `[1,2,3,4,5,7,8]` -> `[[1,5],7,8]`."""
    ids = np.asarray(block_ids, dtype=np.int64)
    if ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [ids.size]))
    out: list[int | list[int]] = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):  # one step per run, not per block
        if end - start >= 3:
            out.append([int(ids[start]), int(ids[end - 1])])
        else:
            out.extend(ids[start:end].tolist())
    return out
