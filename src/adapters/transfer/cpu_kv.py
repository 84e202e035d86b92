"""CPU KV transfer: gathers an engine's blocks from its SHM segments into L1 objects and scatters back.

Per chunk, kernel group, layer and plane one `index_select(out=...)` (store) or `index_copy_` (retrieve)
moves all the chunk's blocks at once, straight between the engine's rows and the object's contiguous
`[blocks, tokens·width]` slice: no staging copy, no Python loop over blocks or bytes. A batched variant
(one gather per layer into a staging buffer, then one copy per chunk) was measured slower (two passes;
`benchmarks/data_path.py --variants`). Heads-major (HND) layers gather into a small temporary and transpose
on the copy, since token-major objects need `[token][head]` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lmcache.domain.kv_layout import KVFormat

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_layout import KernelGroup, RegisteredLayout

__all__ = ("CpuKVTransfer", "torch_dtype")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a wire dtype name (`"float16"`, `"torch.bfloat16"`)."""
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


@dataclass(frozen=True, slots=True)
class _Plane:
    """One layer plane's blocks: `rows` `[NB, row]` when viewable as rows; `blocks` `[NB, NH, BS, HS]`."""

    rows: torch.Tensor | None
    blocks: torch.Tensor


def _planes(layer: torch.Tensor, group: KernelGroup) -> list[_Plane]:
    geom = group.geometry
    if geom.fmt in (KVFormat.KV_FIRST_NHD, KVFormat.KV_FIRST_HND):
        parts = [layer[0], layer[1]]
    elif geom.fmt in (KVFormat.BLOCKS_FIRST_NHD, KVFormat.BLOCKS_FIRST_HND):
        parts = [layer[:, 0], layer[:, 1]]
    else:
        parts = [layer]
    out = []
    for part in parts:
        rows = None
        if not geom.heads_major:
            try:
                rows = _wide(part.view(geom.num_blocks, -1))
            except RuntimeError:
                rows = None
        out.append(_Plane(rows, part))
    return out


def _wide(rows: torch.Tensor) -> torch.Tensor:
    """The same bytes as 8-byte words when they allow it, so index copies move words, not 2-byte elements.

    Measured 4.4 vs 3.0 GB/s for a float16 scatter (`benchmarks/data_path.py --variants`).
    """
    try:
        return rows.view(torch.int64)
    except RuntimeError:
        return rows


class CpuKVTransfer:
    """The `KVTransfer` of one CPU registration.

    Args:
        layout: The registration's object layout.
        layers: The engine's per-layer tensors (views of its SHM segments), in registration order.
        arena: The whole L1 arena as a uint8 tensor.
        closers: Called by `close` (unmapping the segments).
    """

    def __init__(
        self,
        layout: RegisteredLayout,
        layers: Sequence[torch.Tensor],
        arena: torch.Tensor,
        closers: Sequence[object] = (),
    ) -> None:
        self._layout = layout
        self._arena = arena
        self._closers = list(closers)
        self._layers = tuple(layers)
        self._planes = [[_planes(layers[i], g) for i in g.layers] for g in layout.groups]
        self._dtypes = [torch_dtype(g.geometry.dtype) for g in layout.groups]

    @property
    def layout(self) -> RegisteredLayout:
        """The object layout of this registration."""
        return self._layout

    @property
    def layers(self) -> tuple[torch.Tensor, ...]:
        """The engine's per-layer tensors in registration order (read by `POST /cache/checksums`)."""
        return self._layers

    def _object(self, group: KernelGroup, extent: Extent) -> torch.Tensor:
        raw = self._arena.narrow(0, extent.offset + group.offset, group.nbytes)
        return raw.view(self._dtypes[group.index]).view(group.shape)

    def _ids(self, block_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return [torch.as_tensor(list(ids), dtype=torch.int64) for ids in block_ids]

    def gather(
        self, block_ids: Sequence[Sequence[int]], chunks: Sequence[int], extents: Sequence[Extent]
    ) -> None:
        """Engine blocks -> L1 objects, one op per (chunk, group, layer, plane)."""
        ids = self._ids(block_ids)
        for chunk, extent in zip(chunks, extents, strict=True):
            for group, planes in zip(self._layout.groups, self._planes, strict=True):
                bpc = group.blocks_per_chunk
                idx = ids[group.block_list][chunk * bpc : (chunk + 1) * bpc]
                obj = self._object(group, extent)
                for j, layer in enumerate(planes):
                    for p, plane in enumerate(layer):
                        dst = obj[p, j]
                        if plane.rows is not None:
                            torch.index_select(
                                plane.rows, 0, idx, out=dst.view(bpc, -1).view(plane.rows.dtype)
                            )
                        else:
                            picked = plane.blocks.index_select(0, idx)
                            dst.view(bpc, group.geometry.block_size, group.geometry.heads, -1).copy_(
                                picked.transpose(1, 2)
                            )

    def scatter(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int = 0,
    ) -> None:
        """L1 objects -> engine blocks, leaving the first `skip_tokens` tokens' whole blocks untouched."""
        ids = self._ids(block_ids)
        for chunk, extent in zip(chunks, extents, strict=True):
            for group, planes in zip(self._layout.groups, self._planes, strict=True):
                bpc = group.blocks_per_chunk
                tpb = self._layout.chunk_size // bpc
                skip = min(bpc, max(0, skip_tokens // tpb - chunk * bpc))
                if skip >= bpc:
                    continue
                idx = ids[group.block_list][chunk * bpc + skip : (chunk + 1) * bpc]
                obj = self._object(group, extent)
                for j, layer in enumerate(planes):
                    for p, plane in enumerate(layer):
                        src = obj[p, j].view(bpc, -1)[skip:]
                        if plane.rows is not None:
                            plane.rows.index_copy_(0, idx, src.view(plane.rows.dtype))
                        else:
                            geom = group.geometry
                            blocks = src.view(bpc - skip, geom.block_size, geom.heads, -1).transpose(1, 2)
                            plane.blocks.index_copy_(0, idx, blocks)

    def close(self) -> None:
        """Drop the views and unmap the engine's segments; idempotent."""
        self._planes = []
        self._layers = ()
        closers, self._closers = self._closers, []
        for closer in closers:
            close = getattr(closer, "close", None)
            if close is not None:
                close()
