"""The serde wrapper's buffer pool: buffers come back for reuse, sizes fit, the pool stays bounded."""

from __future__ import annotations

from lmcache.adapters.storage._buffers import BufferPool, Scratch


def test_buffers_are_reused_when_they_fit() -> None:
    pool = BufferPool(keep=2)
    first = pool.take(1 << 20)
    pool.give(first)
    assert pool.take(1 << 20) is first
    pool.give(first)
    assert pool.take(100) is not first  # far too large for 100 bytes: not wasted on it
    assert pool.take(3 << 20) is not first  # too small


def test_the_pool_keeps_at_most_keep_buffers() -> None:
    pool = BufferPool(keep=2)
    buffers = [pool.take(1000) for _ in range(5)]
    for buf in buffers:
        pool.give(buf)
    assert len(pool._free) == 2


def test_scratch_views_are_exact_and_released_together() -> None:
    pool = BufferPool(keep=4)
    scratch = Scratch(pool)
    views = [scratch(1234), scratch(70_000)]
    assert [v.nbytes for v in views] == [1234, 70_000]
    assert not views[0].readonly
    scratch.release()
    scratch.release()  # idempotent
    assert len(pool._free) == 2
