"""One contract, every backend: fake, mock, fs, resp, s3, plugin and fault_inject over mock.

resp runs against a real redis-server and s3 against moto's server, both on loopback. Tamper tests run
only over the backends that keep the object format (`verifying`); the fake and the plugin store raw bytes.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from tests.integration.l2.conftest import Harness


def key(i: int, salt: str = "", model: str = "org/model-7b") -> ObjectKey:
    return ObjectKey(i.to_bytes(4, "big") * 8, model, 0x01000100, 0, salt)


def payload(i: int, size: int = 4096 + 17) -> memoryview:
    head = bytes([i % 251]) * 16
    return memoryview((head + os.urandom(max(0, size - 16)))[:size])


def empty(size: int) -> memoryview:
    return memoryview(bytearray(size))


async def test_store_lookup_load_round_trip(backend: Harness) -> None:
    adapter = backend.make()
    keys = [key(1), key(2, salt="tenant-a"), key(3, model="Qwen/Qwen2 7B%+é")]
    data = [payload(1, 1), payload(2, 70_000), payload(3, 4096)]
    assert await adapter.store(keys, data) == [True, True, True]
    assert await adapter.lookup_and_lock([*keys, key(99)]) == [True, True, True, False]
    out = [empty(d.nbytes) for d in data]
    assert await adapter.load(keys, out) == [True, True, True]
    assert [bytes(o) for o in out] == [bytes(d) for d in data]
    await adapter.unlock(keys)
    await adapter.unlock([key(99)])  # unknown keys are ignored


async def test_load_of_missing_key_and_wrong_size_is_a_miss(backend: Harness) -> None:
    adapter = backend.make()
    assert await adapter.store([key(1)], [payload(1, 1000)]) == [True]
    assert await adapter.load([key(2), key(1)], [empty(1000), empty(999)]) == [False, False]
    out = empty(1000)
    assert await adapter.load([key(1)], [out]) == [True]


async def test_cache_salt_is_part_of_the_identity(backend: Harness) -> None:
    adapter = backend.make()
    a, b = key(5, salt="a"), key(5, salt="b")
    assert await adapter.store([a], [payload(1, 512)]) == [True]
    assert await adapter.lookup_and_lock([a, b]) == [True, False]
    assert await adapter.load([b], [empty(512)]) == [False]


async def test_store_is_idempotent_and_concurrent_stores_of_one_key_agree(backend: Harness) -> None:
    adapter = backend.make()
    data = payload(9, 50_000)
    results = await asyncio.gather(*(adapter.store([key(9)], [data]) for _ in range(4)))
    assert results == [[True]] * 4
    assert await adapter.store([key(9), key(9)], [data, data]) == [True, True]
    out = empty(data.nbytes)
    assert await adapter.load([key(9)], [out]) == [True]
    assert bytes(out) == bytes(data)
    page = await adapter.list_keys()
    assert set(page.keys) == {key(9)} and page.next_cursor is None


async def test_delete(backend: Harness) -> None:
    adapter = backend.make()
    await adapter.store([key(1), key(2)], [payload(1, 300), payload(2, 300)])
    assert await adapter.delete([key(1), key(3)]) == [True, False]
    assert await adapter.lookup_and_lock([key(1), key(2)]) == [False, True]
    assert await adapter.load([key(1)], [empty(300)]) == [False]
    assert await adapter.delete([key(1)]) == [False]


async def test_listing_is_paged_and_complete(backend: Harness) -> None:
    adapter = backend.make()
    keys = [key(i, salt=f"s{i % 2}") for i in range(11)]
    assert all(await adapter.store(keys, [payload(i, 64) for i in range(11)]))
    seen: list[ObjectKey] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await adapter.list_keys(cursor, limit=4)
        assert len(page.keys) <= 4
        seen += page.keys
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 20
    assert set(seen) == set(keys) and len(seen) == len(keys)
    assert pages >= 3


async def test_usage_counts_objects_bytes_and_salts(backend: Harness) -> None:
    adapter = backend.make()
    before = await adapter.usage()
    keys = [key(1, "x"), key(2, "y"), key(3, "y")]
    await adapter.store(keys, [payload(1, 1000), payload(2, 2000), payload(3, 10)])
    usage = await adapter.usage()
    assert usage.objects == before.objects + 3
    assert usage.used_bytes >= before.used_bytes + 3010
    assert usage.by_salt["y"] >= 2010 and usage.by_salt["x"] >= 1000


async def test_a_cancelled_store_leaves_a_whole_object_or_none(backend: Harness) -> None:
    adapter = backend.make()
    data = payload(4, 3 << 20)
    for delay in (0.0, 0.001, 0.005):
        task = asyncio.create_task(adapter.store([key(4)], [data]))
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if (await adapter.lookup_and_lock([key(4)]))[0]:
            out = empty(data.nbytes)
            assert await adapter.load([key(4)], [out]) == [True]
            assert bytes(out) == bytes(data)
            await adapter.unlock([key(4)])
        await adapter.delete([key(4)])


async def test_close_flushes_stores_in_flight(backend: Harness) -> None:
    adapter = backend.make()
    data = payload(6, 2 << 20)
    task = asyncio.create_task(adapter.store([key(6)], [data]))
    await asyncio.sleep(0)  # the store has started
    await adapter.close()
    assert task.done() and task.result() == [True]
    if backend.persistent:
        reopened = backend.make()
        out = empty(data.nbytes)
        assert await reopened.load([key(6)], [out]) == [True]
        assert bytes(out) == bytes(data)


async def test_flipped_byte_is_a_counted_miss(verifying: Harness) -> None:
    adapter = verifying.make()
    await adapter.store([key(1)], [payload(1, 5000)])
    await verifying.tamper(adapter, key(1), "flip")
    assert await adapter.lookup_and_lock([key(1)]) == [True]
    assert await adapter.load([key(1)], [empty(5000)]) == [False]
    assert adapter.counters.corrupt == 1


@pytest.mark.parametrize("how", ["flip", "cut", "swap"])
async def test_a_damaged_object_is_quarantined_after_its_first_failed_read(
    verifying: Harness, how: str
) -> None:
    adapter = verifying.make()
    second = payload(2, 5000)
    await adapter.store([key(1), key(2)], [payload(1, 5000), second])
    await verifying.tamper(adapter, key(1), how, other=key(2))
    assert await adapter.lookup_and_lock([key(1)]) == [True]
    assert await adapter.load([key(1)], [empty(5000)]) == [False]
    await adapter.unlock([key(1)])
    assert (adapter.counters.corrupt, adapter.counters.quarantined) == (1, 1)
    # Gone from lookups and listings: never read (nor counted, nor logged) again.
    assert await adapter.lookup_and_lock([key(1), key(2)]) == [False, True]
    assert key(1) not in (await adapter.list_keys()).keys
    assert await adapter.load([key(1)], [empty(5000)]) == [False]
    assert adapter.counters.corrupt == 1
    out = empty(5000)
    assert await adapter.load([key(2)], [out]) == [True] and bytes(out) == bytes(second)


async def test_a_sound_object_read_into_a_buffer_of_another_size_is_not_quarantined(
    verifying: Harness,
) -> None:
    adapter = verifying.make()
    data = payload(1, 5000)
    await adapter.store([key(1)], [data])
    assert await adapter.load([key(1)], [empty(4000)]) == [False]
    assert adapter.counters.quarantined == 0
    out = empty(5000)
    assert await adapter.load([key(1)], [out]) == [True] and bytes(out) == bytes(data)


async def test_truncated_object_is_a_counted_miss(verifying: Harness) -> None:
    adapter = verifying.make()
    await adapter.store([key(1)], [payload(1, 5000)])
    await verifying.tamper(adapter, key(1), "cut")
    assert await adapter.load([key(1)], [empty(5000)]) == [False]
    assert adapter.counters.corrupt == 1


async def test_another_keys_object_is_a_counted_miss(verifying: Harness) -> None:
    adapter = verifying.make()
    await adapter.store([key(1), key(2)], [payload(1, 5000), payload(2, 5000)])
    await verifying.tamper(adapter, key(1), "swap", other=key(2))
    assert await adapter.load([key(1), key(2)], [empty(5000), empty(5000)]) == [False, True]
    assert adapter.counters.corrupt == 1


async def test_objects_outlive_the_adapter(persistent: Harness) -> None:
    first = persistent.make()
    data = payload(8, 12_345)
    await first.store([key(8, "t")], [data])
    await first.close()
    second = persistent.make()
    assert await second.lookup_and_lock([key(8, "t")]) == [True]
    out = empty(data.nbytes)
    assert await second.load([key(8, "t")], [out]) == [True]
    assert bytes(out) == bytes(data)
    assert set((await second.list_keys()).keys) == {key(8, "t")}
