"""One KVTransfer contract, every implementation: the fake and CpuKVTransfer (one thread and two).

Each runs over three layouts: one NHD group, one HND group, and an MLA group beside a K/V group with
their own block lists.

The suite sees the engine only through blocks: what one block holds across its group's layers. Byte order
inside an object is the adapter's business (test_cpu_kv_transfer.py checks CpuKVTransfer against a
reference); what every implementation owes is that the same bytes come back where they came from.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import EngineGroup, TensorSpec, build_layout
from tests.fakes.kv_transfer import FakeKVTransfer
from tests.fakes.l1_memory import FakeL1Memory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lmcache.domain.kv_layout import KernelGroup, RegisteredLayout
    from lmcache.ports.kv_transfer import KVTransfer

NB, BS, NH, HS = 24, 4, 2, 8
CHUNK = 8  # 2 blocks per chunk
LAYOUTS: dict[str, tuple[list[tuple[int, ...]], str, list[EngineGroup]]] = {  # shapes, hint, groups
    "nhd": ([(2, NB, BS, NH, HS)] * 3, "NHD", []),
    "hnd": ([(NB, 2, NH, BS, HS)] * 2, "HND", []),
    "mla_and_kv": (
        [(NB, BS, HS), (2, NB, BS, NH, HS), (2, NB, BS, NH, HS), (NB, BS, HS)],
        "NHD",
        [EngineGroup(0, (0, 3), BS), EngineGroup(1, (1, 2), BS)],
    ),
}
IMPLS = ["fake", "cpu", "cpu_2_threads"]
ARENA = 1 << 16


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))


@dataclass
class _Closer:
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


@dataclass
class Harness:
    """A transfer under test, its L1 arena and a block-level view of the engine memory behind it."""

    transfer: KVTransfer
    layout: RegisteredLayout
    memory: FakeL1Memory
    layers: list[torch.Tensor] = field(default_factory=list)  # CpuKVTransfer's engine
    closer: _Closer = field(default_factory=_Closer)

    @property
    def fake(self) -> FakeKVTransfer | None:
        return self.transfer if isinstance(self.transfer, FakeKVTransfer) else None

    def _layer_blocks(self, group: KernelGroup, block: int) -> list[torch.Tensor]:
        axis = group.geometry.block_axis
        return [self.layers[i].select(axis, block) for i in group.layers]

    def block(self, group: KernelGroup, block: int) -> bytes:
        """What engine block `block` of `group` holds, over all the group's layers."""
        if self.fake is not None:
            return self.fake.blocks.get((group.index, block), bytes(group.nbytes // group.blocks_per_chunk))
        parts = self._layer_blocks(group, block)
        return b"".join(p.contiguous().view(torch.uint8).numpy().tobytes() for p in parts)

    def blocks(self) -> dict[tuple[int, int], bytes]:
        """Every block of every kernel group."""
        return {(g.index, b): self.block(g, b) for g in self.layout.groups for b in range(NB)}

    def randomize(self, seed: int) -> None:
        rng = random.Random(seed)
        if self.fake is not None:
            for g in self.layout.groups:
                for b in range(NB):
                    self.fake.blocks[(g.index, b)] = rng.randbytes(g.nbytes // g.blocks_per_chunk)
            return
        gen = torch.Generator().manual_seed(seed)
        for layer in self.layers:
            layer.copy_(torch.randn(layer.shape, generator=gen).to(layer.dtype))

    def zero(self) -> None:
        if self.fake is not None:
            self.fake.blocks.clear()
        for layer in self.layers:
            layer.zero_()

    def copy_block(self, group: KernelGroup, src: int, dst: int) -> None:
        if self.fake is not None:
            self.fake.blocks[(group.index, dst)] = self.block(group, src)
            return
        for s, d in zip(self._layer_blocks(group, src), self._layer_blocks(group, dst), strict=True):
            d.copy_(s)

    def extents(self, count: int, gap: int = 0) -> list[Extent]:
        size = -(-self.layout.object_bytes // 64) * 64 + gap
        return [Extent(64 + i * size, size) for i in range(count)]

    def arena(self, extent: Extent) -> bytes:
        return bytes(self.memory.view(extent.offset, self.layout.object_bytes))


def _make(impl: str, layout_name: str) -> Harness:
    shapes, hint, groups = LAYOUTS[layout_name]
    specs = [TensorSpec("float16", shape, _strides(shape)) for shape in shapes]
    layout = build_layout(specs, {"kv_layout": hint}, groups, CHUNK)
    memory = FakeL1Memory(ARENA)
    if impl == "fake":
        return Harness(FakeKVTransfer(layout, memory), layout, memory)
    layers = [torch.zeros(shape, dtype=torch.float16) for shape in shapes]
    closer = _Closer()
    threads = 2 if impl == "cpu_2_threads" else 1
    transfer = CpuKVTransfer(layout, layers, memory.tensor, [closer], threads=threads)
    return Harness(transfer, layout, memory, layers, closer)


@pytest.fixture(params=[(i, n) for i in IMPLS for n in LAYOUTS], ids=lambda p: f"{p[0]}-{p[1]}")
def kv(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = _make(*request.param)
    yield harness
    harness.transfer.close()


def _ids(h: Harness, chunks: int, seed: int) -> list[list[int]]:
    """Per block list: `chunks` chunks of distinct, shuffled block ids (no run is one strided copy)."""
    rng = random.Random(seed)
    lists = []
    for lst in range(h.layout.num_block_lists):
        bpc = next(g.blocks_per_chunk for g in h.layout.groups if g.block_list == lst)
        lists.append(rng.sample(range(1, NB), chunks * bpc))
    return lists


def _used(h: Harness, ids: list[list[int]], chunks: int) -> set[tuple[int, int]]:
    return {(g.index, b) for g in h.layout.groups for b in ids[g.block_list][: chunks * g.blocks_per_chunk]}


def test_layout_is_the_registered_one(kv: Harness) -> None:
    assert kv.transfer.layout == kv.layout


def test_gather_then_scatter_restores_exactly_the_range_blocks(kv: Harness) -> None:
    kv.randomize(1)
    ids, extents = _ids(kv, 3, seed=2), kv.extents(3)
    before = kv.blocks()
    kv.transfer.gather(ids, [0, 1, 2], extents)
    assert kv.blocks() == before  # a gather reads the engine, never writes it
    kv.zero()
    kv.transfer.scatter(ids, [0, 1, 2], extents)
    used = _used(kv, ids, 3)
    after = kv.blocks()
    for where, data in after.items():
        assert data == (before[where] if where in used else bytes(len(data))), where


def test_gather_writes_only_the_objects(kv: Harness) -> None:
    kv.randomize(3)
    kv.memory.tensor.fill_(0xA5)
    extents = kv.extents(3, gap=128)  # extents larger than the object, with room between them
    kv.transfer.gather(_ids(kv, 3, seed=4), [0, 1, 2], extents)
    arena = bytes(kv.memory.view(0, ARENA))
    inside = [(e.offset, e.offset + kv.layout.object_bytes) for e in extents]
    outside = bytearray(arena)
    for lo, hi in inside:
        assert arena[lo:hi] != b"\xa5" * (hi - lo)
        outside[lo:hi] = b"\xa5" * (hi - lo)
    assert outside == b"\xa5" * ARENA


def test_an_object_depends_only_on_what_its_blocks_hold(kv: Harness) -> None:
    kv.randomize(5)
    ids = _ids(kv, 3, seed=6)
    twin: list[list[int]] = []  # chunk 2's content copied into other blocks, as chunk 0 of a new range
    free = iter(sorted(set(range(1, NB)) - {b for lst in ids for b in lst}))
    for g in kv.layout.groups:
        bpc = g.blocks_per_chunk
        while len(twin) <= g.block_list:
            twin.append([])
        for src in ids[g.block_list][2 * bpc : 3 * bpc]:
            dst = next(free)
            kv.copy_block(g, src, dst)
            twin[g.block_list].append(dst)
    a, b = kv.extents(2)
    kv.transfer.gather(ids, [2], [a])  # chunk 2 of the range uses the third slice of each block list
    kv.transfer.gather(twin, [0], [b])
    assert kv.arena(a) == kv.arena(b)
    kv.transfer.gather(ids, [1], [b])
    assert kv.arena(a) != kv.arena(b)


def test_scatter_into_other_blocks_moves_the_data(kv: Harness) -> None:
    kv.randomize(7)
    src, dst = _ids(kv, 2, seed=8), _ids(kv, 2, seed=9)
    before = kv.blocks()
    extents = kv.extents(2)
    kv.transfer.gather(src, [0, 1], extents)
    kv.transfer.scatter(dst, [0, 1], extents)
    for g in kv.layout.groups:
        n = 2 * g.blocks_per_chunk
        for s, d in zip(src[g.block_list][:n], dst[g.block_list][:n], strict=True):
            assert kv.block(g, d) == before[(g.index, s)]


@pytest.mark.parametrize("skip_tokens", [0, BS - 1, BS, CHUNK, CHUNK + BS + 1, 3 * CHUNK])
def test_scatter_leaves_the_skipped_whole_blocks_untouched(kv: Harness, skip_tokens: int) -> None:
    kv.randomize(10)
    ids, extents = _ids(kv, 3, seed=11), kv.extents(3)
    before = kv.blocks()
    kv.transfer.gather(ids, [0, 1, 2], extents)
    kv.zero()
    kv.transfer.scatter(ids, [0, 1, 2], extents, skip_tokens)
    for g in kv.layout.groups:
        skipped = skip_tokens // (CHUNK // g.blocks_per_chunk)
        for position, block in enumerate(ids[g.block_list][: 3 * g.blocks_per_chunk]):
            want = bytes(len(before[(g.index, block)])) if position < skipped else before[(g.index, block)]
            assert kv.block(g, block) == want, (g.index, position)


def _bad(kv: Harness, how: str) -> list[list[int]]:
    ids = _ids(kv, 2, seed=12)
    last = ids[-1]
    if how == "past_the_end":
        last[-1] = NB
    elif how == "negative":
        last[-1] = -1
    elif how == "runs_off_the_end":  # ascending from the last block: a run would read past the tensor
        last[-2:] = [NB - 1, NB]
    else:
        del last[-1]
    return ids


@pytest.mark.parametrize("how", ["past_the_end", "negative", "runs_off_the_end", "short_list"])
def test_a_bad_block_id_raises_before_anything_moves(kv: Harness, how: str) -> None:
    kv.randomize(13)
    ids, extents = _bad(kv, how), kv.extents(2)
    kv.memory.tensor.fill_(0x5A)
    before = kv.blocks()
    with pytest.raises(IndexError):
        kv.transfer.gather(ids, [0, 1], extents)
    with pytest.raises(IndexError):
        kv.transfer.scatter(ids, [0, 1], extents)
    assert kv.blocks() == before
    assert bytes(kv.memory.view(0, ARENA)) == b"\x5a" * ARENA


def test_no_chunks_moves_nothing(kv: Harness) -> None:
    kv.randomize(14)
    before = kv.blocks()
    kv.transfer.gather(_ids(kv, 1, seed=15), [], [])
    kv.transfer.scatter(_ids(kv, 1, seed=15), [], [], 0)
    assert kv.blocks() == before
    assert not any(kv.memory.view(0, ARENA))


def test_close_is_idempotent(kv: Harness) -> None:
    kv.transfer.close()
    kv.transfer.close()
    if kv.fake is not None:
        assert kv.fake.closed
    else:
        assert kv.closer.closed == 1  # the engine's segments are unmapped once
