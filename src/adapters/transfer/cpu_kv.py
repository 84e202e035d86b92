"""CPU KV transfer: gathers an engine's blocks from its SHM segments into L1 objects and scatters back.

The request's chunks are first planned into runs (`kv_runs.plan_runs`): consecutive chunks whose blocks
form one ascending range and whose extents lie a constant stride apart. A run moves with one strided
`copy_` per layer and plane, whatever its length: for the usual engine (blocks handed out in order,
extents allocated back to back) a whole request is one run, so a 2048-token request makes 64 copies of
4 MiB instead of 512 `index_select` calls, and the scatter direction avoids `index_copy_` (a per-element
loop in torch, 1.5x slower than the gather). Chunks with scattered blocks fall back to one
`index_select(out=...)` (8-byte words) / numpy row assignment per (chunk, layer, plane), the faster of
each direction on the development VM (torch's `index_copy_` was 1.2-1.5x slower); heads-major (HND)
layers transpose on the copy, since token-major objects need `[token][head]` order.

The copies of one request are split by layer over `threads` workers (`--kv-copy-threads`): torch
releases the GIL inside `copy_`, so on hosts with memory bandwidth to spare two threads move more than one.
Each thread runs on its own CPUs for the copy's length (`cpu_placement`, `--kv-copy-pin`): a scheduler that
packs idle threads onto one CPU would otherwise run both halves in turns on one core.
No Python loop runs over blocks or bytes; the loops are over runs, layers and planes.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmcache.adapters.transfer.cpu_placement import CopyPlacement, CpuSet, pinned
from lmcache.adapters.transfer.kv_runs import Run, plan_runs
from lmcache.adapters.transfer.shm_segment import OwnedSegments
from lmcache.domain.kv_layout import KVFormat

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    import torch

    from lmcache.domain.arena import Extent
    from lmcache.domain.kv_layout import KernelGroup, RegisteredLayout
else:
    from lmcache.adapters.lazy_torch import torch

__all__ = ("CpuKVTransfer", "layer_planes", "torch_dtype")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a wire dtype name (`"float16"`, `"torch.bfloat16"`)."""
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


@dataclass(frozen=True, slots=True)
class _Plane:
    """One layer plane's blocks.

    `rows` is `[NB, row]` (8-byte words where possible) for token-major layers, None for heads-major ones;
    `blocks` is the plane as the engine holds it (`[NB, NH, BS, HS]` when heads-major).
    """

    rows: torch.Tensor | None
    blocks: torch.Tensor
    rows_bytes: np.ndarray | None = None  # `rows` as a numpy uint8 view (the scatter of scattered blocks)


def layer_planes(layer: torch.Tensor, group: KernelGroup) -> list[torch.Tensor]:
    """The K and V planes of an engine layer (views as the engine holds them); one when fused or MLA."""
    fmt = group.geometry.fmt
    if fmt in (KVFormat.KV_FIRST_NHD, KVFormat.KV_FIRST_HND):
        return [layer[0], layer[1]]
    if fmt in (KVFormat.BLOCKS_FIRST_NHD, KVFormat.BLOCKS_FIRST_HND):
        return [layer[:, 0], layer[:, 1]]
    return [layer]


def _planes(layer: torch.Tensor, group: KernelGroup) -> list[_Plane]:
    geom = group.geometry
    out = []
    for part in layer_planes(layer, group):
        rows = None
        if not geom.heads_major:
            try:
                rows = _wide(part.view(geom.num_blocks, -1))
            except RuntimeError as exc:
                msg = f"{geom.fmt.value} layer strides {part.stride()} do not hold whole block rows"
                raise ValueError(msg) from exc
        out.append(_Plane(rows, part, None if rows is None else rows.view(torch.uint8).numpy()))
    return out


def _wide(rows: torch.Tensor) -> torch.Tensor:
    """The same bytes as 8-byte words when they allow it, so index copies move words, not 2-byte elements.

    Measured 4.4 vs 3.0 GB/s for a float16 scatter (`benchmarks/data_path.py --variants`).
    """
    try:
        return rows.view(torch.int64)
    except RuntimeError:
        return rows


def _words(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """`raw` (uint8, last dim contiguous) as `dtype` words; None when its offset or strides are not aligned.

    torch's byte loop is slower than its word loop: a 256 MiB run copy takes 23-24 ms as words against
    30 ms as bytes on one thread, 17 against 19-20 ms on two (`benchmarks/run_copy.py`; memmove matches
    the words).
    """
    size = dtype.itemsize
    if size == 1:
        return raw
    if raw.storage_offset() % size or raw.shape[-1] % size or any(s % size for s in raw.stride()[:-1]):
        return None
    return raw.view(dtype)


def _check_block_ids(ids: np.ndarray, num_blocks: int) -> None:
    """Refuse a block id outside the engine's blocks before anything moves.

    Without it a negative id wrapped around in numpy's scatter (writing the engine's last blocks) and an
    ascending run past the end failed half way with a shape error.
    """
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_blocks):
        bad = int(ids[(ids < 0) | (ids >= num_blocks)][0])
        raise IndexError(f"block id {bad} outside 0..{num_blocks - 1}")


class CpuKVTransfer:
    """The `KVTransfer` of one CPU registration.

    Args:
        layout: The registration's object layout.
        layers: The engine's per-layer tensors (views of its SHM segments), in registration order.
        arena: The whole L1 arena as a uint8 tensor.
        closers: Called by `close` (unmapping the segments).
        ensure_backed: Backs an arena range before a gather writes it (the L1 memory's populator).
        is_backed: Whether an arena range is already backed (then no thread is asked to back it).
        copying: A context entered around each request's copies (the L1 memory's populator stands aside).
        threads: Worker threads a request's copies are split over (1 = the calling thread only).
        placement: Where each of those threads runs during a copy (default: pinned apart).
    """

    def __init__(
        self,
        layout: RegisteredLayout,
        layers: Sequence[torch.Tensor],
        arena: torch.Tensor,
        closers: Sequence[object] = (),
        *,
        ensure_backed: Callable[[int, int], None] | None = None,
        is_backed: Callable[[int, int], bool] | None = None,
        copying: Callable[[], AbstractContextManager[object]] | None = None,
        threads: int = 1,
        placement: CopyPlacement | None = None,
    ) -> None:
        self._layout = layout
        self._arena = arena
        self._closers = OwnedSegments(closers)
        self._layers = tuple(layers)
        self._planes = [[_planes(layers[i], g) for i in g.layers] for g in layout.groups]
        self._dtypes = [torch_dtype(g.geometry.dtype) for g in layout.groups]
        self._ensure_backed = ensure_backed
        self._is_backed = is_backed
        self._copying = copying or contextlib.nullcontext
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self._threads - 1) if self._threads > 1 else None
        self._placement = placement or CopyPlacement()

    @property
    def layout(self) -> RegisteredLayout:
        """The object layout of this registration."""
        return self._layout

    @property
    def layers(self) -> tuple[torch.Tensor, ...]:
        """The engine's per-layer tensors in registration order (read by `POST /cache/checksums`)."""
        return self._layers

    # ---------------------------------------------------------------- public
    def gather(
        self, block_ids: Sequence[Sequence[int]], chunks: Sequence[int], extents: Sequence[Extent]
    ) -> None:
        """Engine blocks -> L1 objects."""
        if self._ensure_backed is not None:
            backed = self._is_backed
            self._back(extents if backed is None else [e for e in extents if not backed(e.offset, e.size)])
        self._run(block_ids, chunks, extents, 0, store=True)

    def scatter(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int = 0,
    ) -> None:
        """L1 objects -> engine blocks, leaving the first `skip_tokens` tokens' whole blocks untouched."""
        self._run(block_ids, chunks, extents, max(0, skip_tokens), store=False)

    def _back(self, extents: Sequence[Extent]) -> None:
        """Back the extents before the copy writes them, split over the copy threads like the copy.

        Backing fresh memory clears every page (0.6-0.8 s per GiB on one core here), and a store that
        arrives before the populator reached its extents pays it; two threads halve it.
        """
        ensure = self._ensure_backed
        assert ensure is not None
        if self._pool is None or len(extents) < 2:
            for extent in extents:
                ensure(extent.offset, extent.size)
            return

        def back(part: Sequence[Extent]) -> None:
            for extent in part:
                ensure(extent.offset, extent.size)

        parts = [extents[k :: self._threads] for k in range(self._threads)]
        self._split([functools.partial(back, part) for part in parts if part])

    def _split(self, parts: Sequence[Callable[[], None]]) -> None:
        """Runs parts[0] on the calling thread and the rest on the pool, each on its planned CPUs.

        Returns only when every part has finished, even when one failed: no helper may still be writing
        into L1 or the engine's blocks once the request is answered.
        """
        pool = self._pool
        assert pool is not None
        plan = self._placement.plan(len(parts))
        futures = [pool.submit(_run_on, cpus, part) for cpus, part in zip(plan[1:], parts[1:], strict=True)]
        try:
            _run_on(plan[0], parts[0])
        finally:
            wait(futures)
        for future in futures:
            future.result()

    def close(self) -> None:
        """Drop the views and unmap the engine's segments; idempotent."""
        self._planes = []
        self._layers = ()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._closers.close()

    # -------------------------------------------------------------- planning
    def _run(
        self,
        block_ids: Sequence[Sequence[int]],
        chunks: Sequence[int],
        extents: Sequence[Extent],
        skip_tokens: int,
        *,
        store: bool,
    ) -> None:
        if not chunks:
            return
        offsets = [e.offset for e in extents]
        work: list[tuple[KernelGroup, list[Run], list[np.ndarray | None]]] = []
        for group in self._layout.groups:
            bpc = group.blocks_per_chunk
            tpb = self._layout.chunk_size // bpc
            ids = np.asarray(block_ids[group.block_list], dtype=np.int64)
            _check_block_ids(ids, group.geometry.num_blocks)
            runs = plan_runs(ids, chunks, offsets, bpc, skip_tokens // tpb)
            picks = [
                None if r.block >= 0 else ids[r.chunk * bpc + r.skip : (r.chunk + 1) * bpc] for r in runs
            ]
            work.append((group, runs, picks))
        with self._copying():
            self._copy_planned(work, store)

    def _copy_planned(
        self, work: list[tuple[KernelGroup, list[Run], list[np.ndarray | None]]], store: bool
    ) -> None:
        layers = [len(g.layers) for g in self._layout.groups]
        total = sum(layers)
        if self._pool is None or total < 2:
            self._copy_layers(work, 0, total, store)
            return
        bounds = [total * k // self._threads for k in range(self._threads + 1)]
        self._split(
            [
                functools.partial(self._copy_layers, work, bounds[k], bounds[k + 1], store)
                for k in range(self._threads)
                if bounds[k] < bounds[k + 1]
            ]
        )

    def _copy_layers(
        self,
        work: list[tuple[KernelGroup, list[Run], list[np.ndarray | None]]],
        first: int,
        last: int,
        store: bool,
    ) -> None:
        """Copy layers `[first, last)` (numbered across kernel groups) of every run."""
        base = 0
        for group, runs, picks in work:
            planes = self._planes[group.index]
            lo, hi = max(first - base, 0), min(last - base, len(planes))
            base += len(planes)
            for j in range(lo, hi):
                for p, plane in enumerate(planes[j]):
                    for run, pick in zip(runs, picks, strict=True):
                        if pick is None:
                            self._copy_run(group, run, p, j, plane, store)
                        else:
                            self._copy_picked(group, run, p, j, plane, torch.from_numpy(pick), store)

    # ----------------------------------------------------------------- copies
    def _object_part(self, group: KernelGroup, run: Run, p: int, j: int) -> torch.Tensor:
        """`[run.count, slots, width]` (group dtype) view of plane p, layer j of the run's objects."""
        _, num_layers, slots, width = group.shape
        itemsize = self._dtypes[group.index].itemsize
        part = slots * width * itemsize
        start = run.offset + group.offset + (p * num_layers + j) * part
        raw = self._arena.as_strided((run.count, part), (max(run.stride, part), 1), start)
        return raw.view(self._dtypes[group.index]).view(run.count, slots, width)

    def _copy_run(self, group: KernelGroup, run: Run, p: int, j: int, plane: _Plane, store: bool) -> None:
        geom, bpc = group.geometry, group.blocks_per_chunk
        blocks = bpc - run.skip  # per chunk
        first = run.block + run.skip
        obj = self._object_part(group, run, p, j).view(run.count, bpc, geom.block_size, -1)[:, run.skip :]
        if plane.rows is not None:
            engine3 = plane.rows[first : first + run.count * blocks].view(run.count, blocks, -1)
            obj3 = _words(obj.view(torch.uint8).view(run.count, blocks, -1), plane.rows.dtype)
            if obj3 is None:  # the objects are not word-aligned: both sides as bytes
                engine3, obj3 = engine3.view(torch.uint8), obj.view(torch.uint8).view(run.count, blocks, -1)
            (obj3.copy_(engine3) if store else engine3.copy_(obj3))
            return
        engine = plane.blocks[first : first + run.count * blocks]  # [n, NH, BS, HS]
        engine5 = engine.view(run.count, blocks, *engine.shape[1:])
        obj5 = obj.view(run.count, blocks, geom.block_size, geom.heads, -1).transpose(2, 3)
        (obj5.copy_(engine5) if store else engine5.copy_(obj5))

    def _copy_picked(
        self, group: KernelGroup, run: Run, p: int, j: int, plane: _Plane, idx: torch.Tensor, store: bool
    ) -> None:
        geom, bpc = group.geometry, group.blocks_per_chunk
        obj = self._object_part(group, run, p, j)[0].view(bpc, -1)[run.skip :]
        if plane.rows is not None:
            if store:
                out = _words(obj.view(torch.uint8), plane.rows.dtype)
                if out is None:  # the object is not word-aligned: gather bytes
                    torch.index_select(plane.rows.view(torch.uint8), 0, idx, out=obj.view(torch.uint8))
                else:
                    torch.index_select(plane.rows, 0, idx, out=out)
            elif plane.rows_bytes is not None:  # numpy's row assignment: ~1.3x torch's index_copy_ here
                plane.rows_bytes[idx.numpy()] = obj.view(torch.uint8).numpy()
            return
        blocks = obj.view(-1, geom.block_size, geom.heads, geom.head_size)
        if store:
            blocks.copy_(plane.blocks.index_select(0, idx).transpose(1, 2))
        else:
            plane.blocks.index_copy_(0, idx, blocks.transpose(1, 2))


def _run_on(cpus: CpuSet | None, part: Callable[[], None]) -> None:
    with pinned(cpus):
        part()
