"""`data_path.py --variants`: the server's CPU gather/scatter against batched and int64-view copies."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from bench_timing import GB, Memcpy, median
from data_path_engine import BLOCK_SIZE, CHUNK, DTYPE, NUM_BLOCKS, REQUEST_TOKENS, Engine, request_bytes
from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import EngineGroup, RegisteredLayout, TensorSpec, build_layout

if TYPE_CHECKING:
    from collections.abc import Callable


class BatchedKV:
    """The batched variant: per layer plane one gather over all chunks into staging, one copy per chunk.

    Only split-K/V token-major layouts (the bench shape), one kernel group.
    """

    def __init__(self, layout: RegisteredLayout, layers: list[torch.Tensor], arena: torch.Tensor) -> None:
        (self.group,) = layout.groups
        self.rows = [[layer[p].view(NUM_BLOCKS, -1) for p in range(2)] for layer in layers]
        self.arena = arena

    def _objects(self, extents: list[Extent]) -> list[torch.Tensor]:
        g = self.group
        return [
            self.arena.narrow(0, e.offset + g.offset, g.nbytes).view(DTYPE).view(g.shape) for e in extents
        ]

    def gather(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Engine blocks -> objects."""
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        idx = torch.as_tensor(block_ids[: len(extents) * bpc], dtype=torch.int64)
        staging = torch.empty(len(idx), self.rows[0][0].shape[1], dtype=DTYPE)
        for j, planes in enumerate(self.rows):
            for p, rows in enumerate(planes):
                torch.index_select(rows, 0, idx, out=staging)
                for c, obj in enumerate(objs):
                    obj[p, j].view(bpc, -1).copy_(staging[c * bpc : (c + 1) * bpc])

    def scatter(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Objects -> engine blocks."""
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        idx = torch.as_tensor(block_ids[: len(extents) * bpc], dtype=torch.int64)
        staging = torch.empty(len(idx), self.rows[0][0].shape[1], dtype=DTYPE)
        for j, planes in enumerate(self.rows):
            for p, rows in enumerate(planes):
                for c, obj in enumerate(objs):
                    staging[c * bpc : (c + 1) * bpc].copy_(obj[p, j].view(bpc, -1))
                rows.index_copy_(0, idx, staging)

    def scatter_wide(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Objects -> engine blocks as CpuKVTransfer.scatter does, with `index_copy_` over int64 views.

        Same ops and loop as the server's per-chunk scatter; only the element type the kernel walks differs
        (index_copy_ on CPU copies element by element, so 8-byte elements do 4x fewer steps than fp16).
        """
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        ids = torch.as_tensor(block_ids, dtype=torch.int64)
        wide = [[rows.view(torch.int64) for rows in planes] for planes in self.rows]
        for c, obj in enumerate(objs):
            idx = ids[c * bpc : (c + 1) * bpc]
            for j, planes in enumerate(wide):
                for p, rows in enumerate(planes):
                    rows.index_copy_(0, idx, obj[p, j].view(bpc, -1).view(torch.int64))


def _check(tensors: list[torch.Tensor], ids: torch.Tensor, want: list[torch.Tensor], what: str) -> None:
    if not all(torch.equal(t.view(torch.int16)[:, ids], w) for t, w in zip(tensors, want, strict=True)):
        raise RuntimeError(f"{what} disagrees with CpuKVTransfer")


def bench_variants(engine: Engine, layers: int, repeat: int) -> list[dict[str, Any]]:
    """GB/s of CpuKVTransfer vs the variants for one 8192-token request, at 1 thread and torch's default."""
    tensors = [t.tensor for t in engine.layers]
    specs = [TensorSpec("float16", tuple(t.shape), tuple(t.stride())) for t in tensors]
    groups = [EngineGroup(0, tuple(range(layers)), BLOCK_SIZE)]
    layout = build_layout(specs, {"kv_layout": "NHD"}, groups, CHUNK)
    tokens_n = REQUEST_TOKENS[-1]
    chunks = list(range(tokens_n // CHUNK))
    nbytes = request_bytes(tokens_n, layers)
    arena = torch.zeros(len(chunks) * layout.object_bytes, dtype=torch.uint8)
    arena_b = torch.zeros_like(arena)
    extents = [Extent(i * layout.object_bytes, layout.object_bytes) for i in chunks]
    ids = engine.blocks(tokens_n)
    current = CpuKVTransfer(layout, tensors, arena)
    batched = BatchedKV(layout, tensors, arena_b)
    try:
        current.gather([ids], chunks, extents)
        batched.gather(ids, extents)
        if not torch.equal(arena, arena_b):
            raise RuntimeError("batched gather disagrees with CpuKVTransfer.gather")
        out_ids = engine.blocks(tokens_n)
        out = torch.tensor(out_ids)
        current.scatter([out_ids], chunks, extents)
        want = [t.view(torch.int16)[:, out].clone() for t in tensors]
        for fn, what in ((batched.scatter, "batched scatter"), (batched.scatter_wide, "int64-view scatter")):
            for t in tensors:
                t[:, out] = 0
            fn(out_ids, extents)
            _check(tensors, out, want, what)
        del want
        cases: dict[str, dict[str, Callable[[], None]]] = {
            "gather": {
                "per_chunk": lambda: current.gather([ids], chunks, extents),
                "batched": lambda: batched.gather(ids, extents),
            },
            "scatter": {
                "per_chunk": lambda: current.scatter([out_ids], chunks, extents),
                "batched": lambda: batched.scatter(out_ids, extents),
                "per_chunk_int64": lambda: batched.scatter_wide(out_ids, extents),
            },
        }
        copy = Memcpy(nbytes)
        default_threads = torch.get_num_threads()
        rows = []
        try:
            for threads in sorted({1, default_threads}):
                for op, impls in cases.items():
                    times: dict[str, list[float]] = {name: [] for name in impls}
                    copies = []
                    for _ in range(repeat):
                        torch.set_num_threads(threads)
                        for name, fn in impls.items():
                            t0 = time.perf_counter()
                            fn()
                            times[name].append(time.perf_counter() - t0)
                        copies.append(copy.seconds())
                    row: dict[str, Any] = {
                        "op": op,
                        "threads": threads,
                        "memcpy_1t_gbps": nbytes / median(copies) / GB,
                    }
                    for name, xs in times.items():
                        row[f"{name}_gbps"] = nbytes / median(xs) / GB
                    rows.append(row)
        finally:
            torch.set_num_threads(default_threads)
    finally:
        current.close()
    return rows
