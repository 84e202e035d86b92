"""CpuKVTransfer against a block-by-block reference: every layout, run shape, skip and thread count."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
import torch

from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer
from lmcache.adapters.transfer.cpu_placement import CopyPlacement
from lmcache.adapters.transfer.kv_runs import Run, plan_runs
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import EngineGroup, KVFormat, RegisteredLayout, TensorSpec, build_layout

NB, BS, NH, HS = 24, 4, 2, 8
CHUNK = 8  # 2 blocks per chunk
SHAPES = {
    "kv_first_nhd": ((2, NB, BS, NH, HS), "NHD"),
    "kv_first_hnd": ((2, NB, NH, BS, HS), "HND"),
    "blocks_first_nhd": ((NB, 2, BS, NH, HS), "NHD"),
    "blocks_first_hnd": ((NB, 2, NH, BS, HS), "HND"),
    "mla": ((NB, BS, HS), "NHD"),
    "fused_nhd": ((NB, BS, NH, 2 * HS), "NHD"),
    "fused_hnd": ((NB, NH, BS, 2 * HS), "HND"),
}


def _layers(shape: tuple[int, ...], count: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(dtype) for _ in range(count)]


def _layout(
    layers: list[torch.Tensor], hint: str, groups: list[EngineGroup] | None = None
) -> RegisteredLayout:
    specs = [
        TensorSpec(str(t.dtype).removeprefix("torch."), tuple(t.shape), tuple(t.stride()), 0) for t in layers
    ]
    return build_layout(specs, {"kv_layout": hint}, groups or [], CHUNK)


def _token_major_planes(layer: torch.Tensor, fmt: KVFormat) -> list[torch.Tensor]:
    """Each plane as `[NB, BS, width]`, token-major, built block by block (the oracle)."""
    if fmt in (KVFormat.KV_FIRST_NHD, KVFormat.KV_FIRST_HND):
        parts = [layer[0], layer[1]]
    elif fmt in (KVFormat.BLOCKS_FIRST_NHD, KVFormat.BLOCKS_FIRST_HND):
        parts = [layer[:, 0], layer[:, 1]]
    else:
        parts = [layer]
    heads_major = fmt in (KVFormat.KV_FIRST_HND, KVFormat.BLOCKS_FIRST_HND, KVFormat.FUSED_HND)
    out = []
    for part in parts:
        blocks = []
        for b in range(part.shape[0]):
            block = part[b]
            if heads_major:
                block = block.transpose(0, 1)
            blocks.append(block.reshape(block.shape[0], -1))
        out.append(torch.stack(blocks))
    return out


def _expected_object(
    layout: RegisteredLayout, layers: list[torch.Tensor], block_ids: list[list[int]], chunk: int
) -> torch.Tensor:
    parts = []
    for group in layout.groups:
        bpc = group.blocks_per_chunk
        ids = block_ids[group.block_list][chunk * bpc : (chunk + 1) * bpc]
        planes = [_token_major_planes(layers[i], group.geometry.fmt) for i in group.layers]
        per_plane = []
        for p in range(group.geometry.planes):
            per_layer = [torch.cat([planes[j][p][b] for b in ids]) for j in range(len(group.layers))]
            per_plane.append(torch.stack(per_layer))
        parts.append(torch.stack(per_plane).contiguous().view(torch.uint8).flatten())
    return torch.cat(parts)


def _extents(layout: RegisteredLayout, count: int, pattern: str) -> list[Extent]:
    size = -(-layout.object_bytes // 64) * 64
    if pattern == "packed":
        return [Extent(i * size, size) for i in range(count)]
    if pattern == "gapped":
        return [Extent(i * 3 * size, size) for i in range(count)]
    if pattern == "reversed":
        return [Extent((count - 1 - i) * size, size) for i in range(count)]
    if pattern == "unaligned":  # 2-byte aligned, not 8: run copies fall back from 8-byte words to bytes
        return [Extent(2 + i * size, size) for i in range(count)]
    offsets = [0, size, 4 * size, 5 * size, 9 * size, 10 * size][:count]  # two strides
    return [Extent(o, size) for o in offsets]


def _block_ids(count: int, pattern: str, seed: int) -> list[int]:
    rng = random.Random(seed)
    if pattern == "ascending":
        return list(range(3, 3 + count * 2))
    if pattern == "scattered":
        return rng.sample(range(NB), count * 2)
    ids = list(range(5, 5 + count * 2))  # ascending but one chunk's blocks swapped, and a jump
    ids[2], ids[3] = ids[3], ids[2]
    return ids[:4] + [i + 3 for i in ids[4:]]


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("ids_pattern", ["ascending", "scattered", "mixed"])
@pytest.mark.parametrize("extent_pattern", ["packed", "gapped", "reversed", "uneven", "unaligned"])
def test_gather_matches_reference_and_scatter_restores(
    name: str, ids_pattern: str, extent_pattern: str
) -> None:
    shape, hint = SHAPES[name]
    layers = _layers(shape, 3, torch.float16, seed=hash((name, ids_pattern)) % 1000)
    layout = _layout(layers, hint)
    count = 5
    block_ids = [_block_ids(count, ids_pattern, seed=7)]
    extents = _extents(layout, count, extent_pattern)
    arena = torch.zeros(max(e.offset + e.size for e in extents) + 64, dtype=torch.uint8)
    transfer = CpuKVTransfer(layout, layers, arena)
    transfer.gather(block_ids, list(range(count)), extents)
    for chunk, extent in enumerate(extents):
        want = _expected_object(layout, layers, block_ids, chunk)
        got = arena[extent.offset : extent.offset + layout.object_bytes]
        assert torch.equal(got, want), f"chunk {chunk}"
    originals = [t.clone() for t in layers]
    for t in layers:
        t.zero_()
    transfer.scatter(block_ids, list(range(count)), extents)
    used = sorted(set(block_ids[0]))
    for t, orig in zip(layers, originals, strict=True):
        block_axis = 1 if t.dim() == 5 and t.shape[0] == 2 else 0
        index = torch.tensor(used)
        assert torch.equal(t.index_select(block_axis, index), orig.index_select(block_axis, index))
        untouched = torch.tensor(sorted(set(range(NB)) - set(used)))
        assert not t.index_select(block_axis, untouched).any()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("skip_tokens", [0, 4, 8, 13, 40])
def test_scatter_skips_leading_blocks_across_groups(threads: int, skip_tokens: int) -> None:
    mla = _layers(SHAPES["mla"][0], 2, torch.bfloat16, seed=1)
    kv = _layers(SHAPES["kv_first_nhd"][0], 3, torch.bfloat16, seed=2)
    layers = [mla[0], kv[0], kv[1], mla[1], kv[2]]
    groups = [EngineGroup(0, (0, 3), BS), EngineGroup(1, (1, 2, 4), BS)]
    layout = _layout(layers, "NHD", groups)
    count = 4
    block_ids = [_block_ids(count, "ascending", 0), _block_ids(count, "mixed", 0)]
    extents = _extents(layout, count, "packed")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    transfer = CpuKVTransfer(layout, layers, arena, threads=threads)
    transfer.gather(block_ids, list(range(count)), extents)
    originals = [t.clone() for t in layers]
    for t in layers:
        t.fill_(7)
    transfer.scatter(block_ids, list(range(count)), extents, skip_tokens)
    skipped_blocks = skip_tokens // BS
    for li, (t, orig) in enumerate(zip(layers, originals, strict=True)):
        ids = block_ids[0 if li in (0, 3) else 1]
        axis = 0 if t.dim() == 3 else 1
        for pos, block in enumerate(ids):
            got = t.select(axis, block)
            if pos < skipped_blocks:
                assert bool((got == 7).all()), f"layer {li} block {block} should be untouched"
            else:
                assert torch.equal(got, orig.select(axis, block)), f"layer {li} block {block}"
    transfer.close()


def test_plan_runs_merges_only_true_continuations() -> None:
    ids = np.array([0, 1, 2, 3, 4, 5, 9, 8, 10, 11, 12, 13, 14, 15, 20, 21], dtype=np.int64)
    offsets = [0, 100, 200, 300, 400, 600, 700, 900]
    runs = plan_runs(ids, range(8), offsets, 2)
    assert runs == [
        Run(0, 3, 0, 100, 0, 0, 0),  # blocks 0-5, extents 100 apart
        Run(3, 1, 300, 0, -1, 0, 3),  # blocks 9, 8 are not ascending
        Run(4, 2, 400, 200, 10, 0, 4),  # a new run after a scattered chunk; its stride is 200
        Run(6, 1, 700, 0, 14, 0, 6),  # the stride changed to 100
        Run(7, 1, 900, 0, 20, 0, 7),  # block 20 does not follow block 15
    ]


def test_plan_runs_skips_whole_and_partial_chunks() -> None:
    ids = np.arange(8, dtype=np.int64)
    runs = plan_runs(ids, [0, 1, 2, 3], [0, 10, 20, 30], 2, skip_blocks=3)
    assert runs == [Run(1, 1, 10, 0, 2, 1, 1), Run(2, 2, 20, 10, 4, 0, 2)]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gather_backs_each_extent_once_before_copying(threads: int) -> None:
    layers = _layers(SHAPES["kv_first_nhd"][0], 2, torch.float16, seed=3)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 3, "gapped")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    backed: list[tuple[int, int]] = []
    copied: list[int] = []
    by_thread: set[str] = set()

    def ensure(offset: int, size: int) -> None:
        assert not copied, "an extent was backed after the copy began"
        backed.append((offset, size))
        by_thread.add(threading.current_thread().name)
        time.sleep(0.02)  # long enough for the other threads to pick up their share

    transfer = CpuKVTransfer(layout, layers, arena, ensure_backed=ensure, threads=threads)
    original = transfer._copy_layers

    def spy(*args: object) -> None:
        copied.append(1)
        original(*args)  # type: ignore[arg-type]

    transfer._copy_layers = spy  # type: ignore[method-assign]
    transfer.gather([_block_ids(3, "ascending", 0)], [0, 1, 2], extents)
    transfer.close()
    assert sorted(backed) == sorted((e.offset, e.size) for e in extents)
    assert len(by_thread) == min(threads, len(extents))  # the copy threads share the backing


@pytest.mark.parametrize("threads", [1, 2])
def test_every_copy_runs_inside_the_copying_context(threads: int) -> None:
    layers = _layers(SHAPES["kv_first_nhd"][0], 2, torch.float16, seed=5)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 3, "packed")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    inside = {"depth": 0, "entered": 0}
    seen: list[int] = []

    class Copying:
        def __enter__(self) -> None:
            inside["depth"] += 1
            inside["entered"] += 1

        def __exit__(self, *exc: object) -> None:
            inside["depth"] -= 1

    transfer = CpuKVTransfer(layout, layers, arena, copying=Copying, threads=threads)
    original = transfer._copy_layers

    def spy(*args: object) -> None:
        seen.append(inside["depth"])
        original(*args)  # type: ignore[arg-type]

    transfer._copy_layers = spy  # type: ignore[method-assign]
    ids = [_block_ids(3, "ascending", 0)]
    transfer.gather(ids, [0, 1, 2], extents)
    transfer.scatter(ids, [0, 1, 2], extents)
    transfer.close()
    assert inside == {"depth": 0, "entered": 2}  # once per request, left on the way out
    assert seen and all(depth == 1 for depth in seen)


@pytest.mark.parametrize("threads", [1, 2])
def test_gather_backs_only_what_is_not_backed_yet(threads: int) -> None:
    layers = _layers(SHAPES["kv_first_nhd"][0], 2, torch.float16, seed=4)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 3, "gapped")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    backed: list[int] = []
    done = {extents[0].offset, extents[2].offset}  # the populator already passed these two
    transfer = CpuKVTransfer(
        layout,
        layers,
        arena,
        ensure_backed=lambda offset, size: backed.append(offset),
        is_backed=lambda offset, size: offset in done,
        threads=threads,
    )
    ids = [_block_ids(3, "ascending", 0)]
    transfer.gather(ids, [0, 1, 2], extents)
    assert backed == [extents[1].offset]
    done.add(extents[1].offset)
    transfer.gather(ids, [0, 1, 2], extents)  # all backed: no call, and no hop to a copy thread
    transfer.close()
    assert backed == [extents[1].offset]


def _two_cpus() -> tuple[int, int]:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to pin the copy threads apart")
    return allowed[0], allowed[1]


@pytest.mark.parametrize("store", [True, False])
def test_each_copy_thread_runs_on_its_planned_cpu_and_gets_its_mask_back(store: bool) -> None:
    here, there = _two_cpus()
    layers = _layers(SHAPES["kv_first_nhd"][0], 4, torch.float16, seed=6)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 3, "packed")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    placement = CopyPlacement(allowed=lambda: {here, there}, current_cpu=lambda: here)
    transfer = CpuKVTransfer(layout, layers, arena, threads=2, placement=placement)
    original = transfer._copy_layers
    masks: dict[bool, set[int]] = {}  # on the calling thread?
    helpers: list[threading.Thread] = []

    def spy(*args: object) -> None:
        caller = threading.current_thread() is threading.main_thread()
        masks[caller] = os.sched_getaffinity(0)
        if not caller:
            helpers.append(threading.current_thread())
        original(*args)  # type: ignore[arg-type]

    transfer._copy_layers = spy  # type: ignore[method-assign]
    before = os.sched_getaffinity(0)
    ids = [_block_ids(3, "ascending", 0)]
    transfer.gather(ids, [0, 1, 2], extents)
    if not store:
        transfer.scatter(ids, [0, 1, 2], extents)
    assert masks == {True: {here}, False: {there}}
    assert os.sched_getaffinity(0) == before  # the caller's mask is back
    helper_mask: list[set[int]] = []
    assert transfer._pool is not None
    transfer._pool.submit(lambda: helper_mask.append(os.sched_getaffinity(0))).result()
    assert helper_mask == [before]  # and the helper's
    transfer.close()


def test_unpinned_copies_keep_the_threads_masks() -> None:
    _two_cpus()
    layers = _layers(SHAPES["kv_first_nhd"][0], 4, torch.float16, seed=7)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 2, "packed")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    transfer = CpuKVTransfer(layout, layers, arena, threads=2, placement=CopyPlacement(False))
    original = transfer._copy_layers
    masks: list[set[int]] = []

    def spy(*args: object) -> None:
        masks.append(os.sched_getaffinity(0))
        original(*args)  # type: ignore[arg-type]

    transfer._copy_layers = spy  # type: ignore[method-assign]
    transfer.gather([_block_ids(2, "ascending", 0)], [0, 1], extents)
    transfer.close()
    assert masks == [os.sched_getaffinity(0)] * 2


def test_a_failed_part_returns_only_after_the_other_threads_finished() -> None:
    layers = _layers(SHAPES["kv_first_nhd"][0], 2, torch.float16, seed=8)
    layout = _layout(layers, "NHD")
    extents = _extents(layout, 2, "gapped")
    arena = torch.zeros(extents[-1].offset + extents[-1].size, dtype=torch.uint8)
    helper_done = threading.Event()

    def ensure(offset: int, size: int) -> None:
        if threading.current_thread() is threading.main_thread():
            raise OSError("backing failed")
        time.sleep(0.2)
        helper_done.set()

    transfer = CpuKVTransfer(layout, layers, arena, ensure_backed=ensure, threads=2)
    with pytest.raises(OSError, match="backing failed"):
        transfer.gather([_block_ids(2, "ascending", 0)], [0, 1], extents)
    assert helper_done.is_set(), "the request failed while a copy thread was still writing"
    transfer.close()
