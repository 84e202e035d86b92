from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from lmcache.domain.events import EvictionReason, L1Removed, L2Stored, L2StoreDropped, PrefetchCompleted
from lmcache.domain.prefetch_controller import PrefetchController, PrefetchRequest
from lmcache.domain.store_controller import StoreController
from tests.fakes.l1_memory import FakeL1Memory
from tests.fakes.l2_adapter import FakeL2Adapter

from ._storage import ALIGN, key, make_l1

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager

SLOTS = 32


def _write(l1: L1Manager, memory: FakeL1Memory, k: ObjectKey, fill: int) -> None:
    extent = l1.reserve([k], ALIGN)[0]
    assert extent is not None
    memory.view(extent.offset, extent.size)[:] = bytes([fill]) * ALIGN
    assert l1.finish([k]) == [True]


def _read(l1: L1Manager, memory: FakeL1Memory, k: ObjectKey) -> bytes:
    extent = l1.extent(k)
    assert extent is not None
    return bytes(memory.view(extent.offset, extent.size))


# ------------------------------------------------------------------- store
async def test_default_store_copies_to_every_adapter_and_keeps_l1() -> None:
    l1, _, events = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    a0, a1 = FakeL2Adapter("a0"), FakeL2Adapter("a1")
    ctl = StoreController(l1, memory, [a0, a1], events=events)
    _write(l1, memory, key(1), 7)
    assert ctl.submit([key(1)]) == 1
    assert await ctl.drain() == 1
    assert a0.objects[key(1)] == a1.objects[key(1)] == bytes([7]) * ALIGN
    assert l1.contains(key(1)) and l1.readers(key(1)) == 0
    assert [e.succeeded for e in events.of_type(L2Stored)] == [1, 1]


async def test_skip_l1_drops_l1_only_after_the_l2_store_completes() -> None:
    l1, _, events = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    slow = FakeL2Adapter()
    gate, entered = asyncio.Event(), asyncio.Event()
    seen_during_store: list[tuple[bool, int]] = []
    original = slow.store

    async def gated_store(keys, buffers):  # type: ignore[no-untyped-def]
        seen_during_store.append((l1.contains(key(1)), l1.readers(key(1))))
        entered.set()
        await gate.wait()
        return await original(keys, buffers)

    slow.store = gated_store  # type: ignore[method-assign]
    ctl = StoreController(l1, memory, [slow], policy="skip_l1", events=events)
    _write(l1, memory, key(1), 3)
    ctl.submit([key(1)])
    task = asyncio.create_task(ctl.drain())
    await asyncio.wait_for(entered.wait(), 5)
    assert seen_during_store == [(True, 1)]  # still in L1 and read-locked while copying
    assert l1.contains(key(1))
    gate.set()
    await task
    assert slow.objects[key(1)] == bytes([3]) * ALIGN
    assert not l1.contains(key(1))
    assert events.of_type(L1Removed)[-1].reason == EvictionReason.STORED_TO_L2


async def test_skip_l1_keeps_objects_no_adapter_accepted() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    failing = FakeL2Adapter()
    failing.fail_next_stores(1)
    ctl = StoreController(l1, memory, [failing], policy="skip_l1")
    _write(l1, memory, key(1), 1)
    _write(l1, memory, key(2), 2)
    ctl.submit([key(1), key(2)])
    await ctl.drain()
    assert l1.contains(key(1)) and not l1.contains(key(2))


async def test_skip_l1_waits_for_other_readers() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    ctl = StoreController(l1, memory, [FakeL2Adapter()], policy="skip_l1")
    _write(l1, memory, key(1), 1)
    l1.lock_read([key(1)])
    ctl.submit([key(1)])
    await ctl.drain()
    assert l1.contains(key(1))
    l1.unlock_read([key(1)])
    assert not l1.contains(key(1))


async def test_raising_or_hanging_adapter_is_a_failed_store_not_a_stall() -> None:
    l1, _, events = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    broken, hung, good = FakeL2Adapter(), FakeL2Adapter(), FakeL2Adapter()
    broken.raise_on.add("store")
    hung.hang_on.add("store")
    ctl = StoreController(l1, memory, [broken, hung, good], deadline_s=0.05, events=events)
    _write(l1, memory, key(1), 9)
    ctl.submit([key(1)])
    await ctl.drain()
    assert key(1) in good.objects
    assert sorted((e.adapter_index, e.succeeded, e.failed) for e in events.of_type(L2Stored)) == [
        (0, 0, 1),
        (1, 0, 1),
        (2, 1, 0),
    ]
    size = len(good.objects[key(1)])
    assert sorted((e.adapter_index, e.sizes) for e in events.of_type(L2Stored)) == [
        (0, (0,)),
        (1, (0,)),
        (2, (size,)),
    ]
    assert l1.readers(key(1)) == 0


async def test_bounded_queue_drops_and_counts() -> None:
    l1, _, events = make_l1(slots=SLOTS)
    ctl = StoreController(l1, FakeL1Memory(SLOTS * ALIGN), [FakeL2Adapter()], queue_size=2, events=events)
    assert ctl.submit([key(1), key(2), key(3)]) == 2
    assert ctl.dropped == 1 and ctl.pending == 2
    assert events.of_type(L2StoreDropped)[0].count == 1


# ---------------------------------------------------------------- prefetch
def _request(rows: list[list[ObjectKey]], readers: int = 1) -> PrefetchRequest:
    return PrefetchRequest(rows, [ALIGN] * len(rows), readers)


async def test_prefetch_loads_from_the_lowest_adapter_that_has_each_chunk() -> None:
    l1, _, events = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    a0, a1 = FakeL2Adapter("a0"), FakeL2Adapter("a1")
    row = [key(i) for i in range(4)]
    _write(l1, memory, row[0], 10)  # chunk 0 in L1
    a0.objects[row[1]] = bytes([11]) * ALIGN
    a1.objects[row[1]] = bytes([99]) * ALIGN  # also in a1: a0 wins
    a1.objects[row[2]] = bytes([12]) * ALIGN  # adapter 0 misses chunk 2, adapter 1 has it
    ctl = PrefetchController(l1, memory, [a0, a1], events=events)
    result = await ctl.prefetch(_request([row], readers=2))
    assert (result.prefix_chunks, result.l1_hits, result.l2_hits) == (3, 1, 2)
    assert a0.loaded == [row[1]] and a1.loaded == [row[2]]
    assert _read(l1, memory, row[1]) == bytes([11]) * ALIGN
    assert _read(l1, memory, row[2]) == bytes([12]) * ALIGN
    assert [l1.readers(k) for k in row] == [2, 2, 2, 0]
    assert not a0.locks and not a1.locks  # every L2 lock released
    assert events.of_type(PrefetchCompleted)[0].prefix_chunks == 3


async def test_prefix_is_the_shortest_row() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    rank0 = [key(i, rank=1) for i in range(3)]
    rank1 = [key(i, rank=2) for i in range(3)]
    for k in [*rank0, rank1[0]]:
        _write(l1, memory, k, 1)
    ctl = PrefetchController(l1, memory, [FakeL2Adapter()])
    result = await ctl.prefetch(_request([rank0, rank1]))
    assert result.prefix_chunks == 1
    assert [l1.readers(k) for k in rank0] == [1, 0, 0]  # locks past the common prefix dropped


async def test_l2_deadline_turns_into_a_miss() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    hung, good = FakeL2Adapter(), FakeL2Adapter()
    row = [key(i) for i in range(3)]
    _write(l1, memory, row[0], 1)
    hung.objects[row[1]] = bytes(ALIGN)
    hung.hang_on.add("lookup")
    good.objects[row[2]] = bytes(ALIGN)
    ctl = PrefetchController(l1, memory, [hung, good], deadline_s=0.05)
    result = await ctl.prefetch(_request([row]))
    assert result.prefix_chunks == 1 and result.l2_errors == 1
    assert l1.readers(row[0]) == 1 and not l1.contains(row[2])


async def test_load_failure_truncates_and_cleans_up() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    adapter = FakeL2Adapter()
    row = [key(i) for i in range(3)]
    for k in row:
        adapter.objects[k] = bytes([5]) * ALIGN
    adapter.objects[row[1]] = b"short"  # size mismatch: load fails
    ctl = PrefetchController(l1, memory, [adapter], max_in_flight=1)
    result = await ctl.prefetch(_request([row]))
    assert result.prefix_chunks == 1
    assert l1.contains(row[0]) and not l1.contains(row[1]) and not l1.contains(row[2])
    assert l1.stats().used_bytes == ALIGN
    assert not adapter.locks


@pytest.mark.parametrize(("policy", "stays"), [("default", False), ("retain", True)])
async def test_prefetched_objects_are_temporary_unless_retained(policy: str, stays: bool) -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    adapter = FakeL2Adapter()
    adapter.objects[key(1)] = bytes(ALIGN)
    ctl = PrefetchController(l1, memory, [adapter], policy=policy)  # type: ignore[arg-type]
    assert (await ctl.prefetch(_request([[key(1)]]))).prefix_chunks == 1
    assert l1.contains(key(1))
    l1.unlock_read([key(1)])  # the reader finished
    assert l1.contains(key(1)) is stays


async def test_max_in_flight_bounds_concurrent_loads() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    adapter = FakeL2Adapter()
    row = [key(i) for i in range(10)]
    for k in row:
        adapter.objects[k] = bytes(ALIGN)
    active = peak = 0
    original = adapter.load

    async def counting_load(keys, buffers):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0)
        try:
            return await original(keys, buffers)
        finally:
            active -= 1

    adapter.load = counting_load  # type: ignore[method-assign]
    ctl = PrefetchController(l1, memory, [adapter], max_in_flight=3)
    assert (await ctl.prefetch(_request([row]))).prefix_chunks == 10
    assert peak == 3


async def test_all_l1_hits_never_touch_l2() -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    adapter = FakeL2Adapter()
    adapter.hang_on.add("lookup")
    _write(l1, memory, key(1), 1)
    ctl = PrefetchController(l1, memory, [adapter], deadline_s=60)
    assert (await asyncio.wait_for(ctl.prefetch(_request([[key(1)]])), 5)).prefix_chunks == 1


@pytest.mark.parametrize(
    ("controller", "names", "what"),
    [
        (StoreController, ("default", "skip_l1"), "store"),
        (PrefetchController, ("default", "retain"), "prefetch"),
    ],
)
def test_policy_names_are_the_configs_and_others_are_refused(
    controller: type[StoreController] | type[PrefetchController], names: tuple[str, ...], what: str
) -> None:
    l1, _, _ = make_l1(slots=SLOTS)
    memory = FakeL1Memory(SLOTS * ALIGN)
    for name in names:
        assert controller(l1, memory, [], policy=name).policy == name  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"unknown L2 {what} policy 'lru'"):
        controller(l1, memory, [], policy="lru")  # type: ignore[arg-type]
