from __future__ import annotations

import itertools
import random

import pytest

from lmcache.domain.arena import ArenaAllocator, Extent


def test_extents_are_aligned_and_rounded_up() -> None:
    arena = ArenaAllocator(10 * 4096 + 100, 4096)
    assert arena.total_bytes == 10 * 4096
    a = arena.alloc(1)
    b = arena.alloc(4097)
    assert a is not None and b is not None
    assert a.size == 4096 and b.size == 8192
    assert a.offset % 4096 == 0 and b.offset % 4096 == 0
    assert arena.used_bytes == 3 * 4096


def test_alloc_fails_cleanly_when_full() -> None:
    arena = ArenaAllocator(4 * 64, 64)
    assert [arena.alloc(64) for _ in range(4)].count(None) == 0
    assert arena.alloc(64) is None
    assert arena.stats().free_bytes == 0


def test_free_coalesces_neighbours_into_one_run() -> None:
    arena = ArenaAllocator(8 * 64, 64)
    extents = [arena.alloc(64) for _ in range(8)]
    assert all(extents)
    for i in (1, 3, 5):
        arena.free(extents[i])  # type: ignore[arg-type]
    stats = arena.stats()
    assert stats.free_bytes == 3 * 64 and stats.largest_free == 64
    assert stats.fragmentation == pytest.approx(2 / 3)
    assert arena.alloc(128) is None  # no two adjacent free slots yet
    arena.free(extents[2])  # type: ignore[arg-type]
    arena.free(extents[4])  # type: ignore[arg-type]
    assert arena.stats().largest_free == 5 * 64  # slots 1..5 merged
    big = arena.alloc(5 * 64)
    assert big == Extent(64, 5 * 64)


def test_double_free_and_foreign_extent_are_refused() -> None:
    arena = ArenaAllocator(4 * 64, 64)
    ext = arena.alloc(64)
    assert ext is not None
    arena.free(ext)
    with pytest.raises(ValueError, match="not allocated"):
        arena.free(ext)
    with pytest.raises(ValueError, match="not allocated"):
        arena.free(Extent(128, 64))


def test_alignment_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ArenaAllocator(1024, 48)


def test_random_alloc_free_keeps_accounting_consistent() -> None:
    rng = random.Random(7)
    arena = ArenaAllocator(1 << 20, 256)
    live: list[Extent] = []
    for _ in range(5000):
        if live and rng.random() < 0.45:
            arena.free(live.pop(rng.randrange(len(live))))
        else:
            ext = arena.alloc(rng.randrange(1, 16 * 1024))
            if ext is not None:
                live.append(ext)
        assert arena.used_bytes == sum(e.size for e in live)
    spans = sorted(live)
    for a, b in itertools.pairwise(spans):
        assert a.offset + a.size <= b.offset  # no overlap
    for ext in live:
        arena.free(ext)
    stats = arena.stats()
    assert stats.used_bytes == 0 and stats.largest_free == arena.total_bytes and stats.fragmentation == 0.0


def test_alloc_many_carves_back_to_back_extents_from_one_run() -> None:
    arena = ArenaAllocator(16 * 64, 64)
    first = arena.alloc(64)
    batch = arena.alloc_many(100, 5)  # rounded up to 128 each
    assert first is not None and len(batch) == 5
    assert [e.offset for e in batch] == [64 + 128 * i for i in range(5)]
    assert all(e.size == 128 for e in batch) and len({id(e.size) for e in batch}) == 1  # one shared int
    assert arena.used_bytes == 64 + 5 * 128
    assert arena.alloc_many(64, 10) == []  # 5 units left in one run: no run holds ten
    assert arena.used_bytes == 64 + 5 * 128  # nothing taken by the refusal


def test_free_many_coalesces_and_refuses_atomically() -> None:
    arena = ArenaAllocator(16 * 64, 64)
    extents = arena.alloc_many(64, 16)
    with pytest.raises(ValueError, match="not allocated"):
        arena.free_many([(e.offset, e.size) for e in extents[:4]] + [(4096, 64)])
    assert arena.used_bytes == 16 * 64  # the bad pair refused the whole call
    arena.free_many([(e.offset, e.size) for e in reversed(extents[2:10])])
    stats = arena.stats()
    assert stats.used_bytes == 8 * 64 and stats.largest_free == 8 * 64 and stats.fragmentation == 0.0
    arena.free_many([(e.offset, e.size) for e in extents[:2] + extents[10:]])
    assert arena.stats().largest_free == arena.total_bytes and arena.stats().extents == 0
    with pytest.raises(ValueError, match="not allocated"):
        arena.free_many([(extents[0].offset, 64)])


@pytest.mark.parametrize("align", [64, 4096], ids=["sparse-marks", "dense-marks"])
@pytest.mark.parametrize(
    ("unit", "extra", "units"),
    [(1, 1, 1), (-1, 0, 1), (16, 0, 1), (10**9, 0, 1), (0, 0, 2), (0, 0, 0), (2, 0, 1)],
    ids=["unaligned", "negative", "past-end", "far-past-end", "wrong-size", "zero-size", "inside-an-extent"],
)
def test_bad_frees_are_refused_and_change_nothing(align: int, unit: int, extra: int, units: int) -> None:
    arena = ArenaAllocator(16 * align, align)
    assert arena.alloc(align) == (0, align) and arena.alloc(3 * align) == (align, 3 * align)
    offset, size = unit * align + extra, units * align
    before = arena.stats()
    with pytest.raises(ValueError, match="not allocated"):
        arena.free_at(offset, size)
    with pytest.raises(ValueError, match="not allocated"):
        arena.free_many([(0, align), (offset, size)])
    assert arena.stats() == before
    arena.free_many([(0, align), (align, 3 * align)])
    assert arena.stats().used_bytes == 0 and arena.stats().extents == 0
    assert len(arena.alloc_many(align, 16)) == 16 and arena.stats().extents == 16
