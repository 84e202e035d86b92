"""fault_inject: deterministic drops by rate and seed, by load index, and failed stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.adapters.storage.fault_inject import FaultInjectL2Adapter
from lmcache.domain.keys import ObjectKey
from tests.fakes.l2_adapter import FakeL2Adapter

if TYPE_CHECKING:
    from lmcache.ports.l2_adapter import L2Adapter

KEYS = [ObjectKey(i.to_bytes(8, "big"), "m", 1) for i in range(400)]


def _views(n: int = 400) -> list[memoryview]:
    return [memoryview(bytearray(8)) for _ in range(n)]


async def _stored(**kwargs: object) -> tuple[FaultInjectL2Adapter, FakeL2Adapter]:
    fake = FakeL2Adapter()
    await fake.store(KEYS, [memoryview(k.chunk_hash) for k in KEYS])
    adapter = FaultInjectL2Adapter(fake, **kwargs)  # type: ignore[arg-type]
    _check: L2Adapter = adapter
    return adapter, fake


async def test_rate_zero_forwards_everything() -> None:
    adapter, _ = await _stored(load_drop_rate=0.0)
    assert all(await adapter.load(KEYS, _views()))
    assert adapter.faults["load"] == 0


async def test_drops_are_deterministic_per_seed_and_near_the_rate() -> None:
    first, _ = await _stored(load_drop_rate=0.25, seed=1)
    again, _ = await _stored(load_drop_rate=0.25, seed=1)
    other, _ = await _stored(load_drop_rate=0.25, seed=2)
    a = await first.load(KEYS, _views())
    assert a == await again.load(KEYS, _views())
    assert a != await other.load(KEYS, _views())
    assert 60 <= a.count(False) <= 140
    assert first.faults["load"] == a.count(False)
    # Order does not matter: the choice depends on key and seed only.
    reversed_answer = await again.load(KEYS[::-1], _views())
    assert reversed_answer[::-1] == a


async def test_rate_one_drops_every_load() -> None:
    adapter, fake = await _stored(load_drop_rate=1.0)
    assert await adapter.load(KEYS[:5], _views(5)) == [False] * 5
    assert fake.loaded == []
    assert await adapter.lookup_and_lock(KEYS[:1]) == [True]  # still looks present


async def test_drop_by_load_index_counts_across_calls() -> None:
    adapter, _ = await _stored(drop_load_indices=[1, 3])
    answers = [(await adapter.load([k], _views(1)))[0] for k in KEYS[:5]]
    assert answers == [True, False, True, False, True]


async def test_failed_stores_are_not_forwarded() -> None:
    fake = FakeL2Adapter()
    adapter = FaultInjectL2Adapter(fake, fail_all_stores=True)
    assert await adapter.store(KEYS[:3], _views(3)) == [False] * 3
    assert fake.objects == {}
    some = FaultInjectL2Adapter(FakeL2Adapter(), store_fail_rate=0.5, seed=3)
    result = await some.store(KEYS, _views())
    assert 150 <= result.count(False) <= 250 and some.faults["store"] == result.count(False)


async def test_gap_indices_drop_positions_of_each_lookup_batch() -> None:
    adapter, _ = await _stored(gap_indices=[1])
    for request in (KEYS[0:4], KEYS[10:14]):  # positions count from each lookup's first hit
        assert await adapter.lookup_and_lock(request) == [True] * 4
        answers = [
            (await adapter.load([k], _views(1)))[0] for k in request
        ]  # one load per key, as a prefetch
        assert answers == [True, False, True, True]
    missing = ObjectKey(b"absent", "m", 1)
    assert await adapter.lookup_and_lock([missing, *KEYS[20:23]]) == [False, True, True, True]
    assert await adapter.load(KEYS[20:23], _views(3)) == [True, False, True]  # positions among the hits
    assert adapter.faults["load"] == 3


async def test_gap_tail_ratios_count_from_the_tail() -> None:
    adapter, _ = await _stored(gap_tail_ratios=[0.0, 0.5])
    batch = KEYS[:5]
    await adapter.lookup_and_lock(batch)
    assert await adapter.load(batch, _views(5)) == [True, True, False, True, False]  # middle and last


def test_lmcache_form_parses_beside_ours() -> None:
    import pytest

    from lmcache.app.config.l2 import L2Config

    lmcache_form = {
        "type": "fault_inject",
        "inner": {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 9},
        "gap_indices": [1],
        "rate": 0.25,
        "seed": 4,
    }
    spec = L2Config.model_validate({"l2_adapter": [lmcache_form]}).l2_adapter[0]
    assert (spec.adapter.type, spec.gap_indices, spec.load_drop_rate, spec.seed) == ("mock", [1], 0.25, 4)
    both = {**lmcache_form, "adapter": lmcache_form["inner"]}
    with pytest.raises(ValueError, match="give 'adapter' or LMCache's 'inner', not both"):
        L2Config.model_validate({"l2_adapter": [both]})
    with pytest.raises(ValueError, match="gap_indices"):
        L2Config.model_validate({"l2_adapter": [{**lmcache_form, "gap_indices": [-1]}]})
