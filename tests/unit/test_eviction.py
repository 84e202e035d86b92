from __future__ import annotations

from lmcache.domain.events import AllocationFailed, EvictionReason, L1Removed
from lmcache.domain.eviction import IsolatedLruPolicy, LruPolicy, NoopPolicy
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.quotas import QuotaTable

from ._storage import ALIGN, key, make_l1, named_policy, put


def _always(_: object) -> bool:
    return True


def test_lru_order_follows_use() -> None:
    lru = LruPolicy()
    for i in range(4):
        lru.admit(key(i), 10)
    lru.touch(key(0))
    lru.touch(key(2))
    assert lru.victims(40, _always) == [key(1), key(3), key(0), key(2)]
    assert lru.victims(15, _always) == [key(1), key(3)]
    lru.remove(key(1))
    assert lru.victims(10, _always) == [key(3)]


def test_lru_skips_what_is_not_evictable() -> None:
    lru = LruPolicy()
    for i in range(3):
        lru.admit(key(i), 10)
    assert lru.victims(10, lambda k: k != key(0)) == [key(1)]


def test_l1_lookup_refreshes_lru_position() -> None:
    l1, _, _ = make_l1(slots=3)
    put(l1, key(1), key(2), key(3))
    l1.lock_read([key(1)])
    l1.unlock_read([key(1)])
    l1.touch([key(2)])
    assert l1.evict(ALIGN) == (1, ALIGN)
    assert not l1.contains(key(3)) and l1.contains(key(1)) and l1.contains(key(2))


def test_isolated_lru_salt_without_quota_is_evicted_at_next_cycle() -> None:
    quotas = QuotaTable()
    quotas.set("allowed", 2 * ALIGN)
    l1, _, events = make_l1(slots=16, policy="IsolatedLRU", quotas=quotas)
    put(l1, key(1, "allowed"), key(2, "allowed"), key(3, "allowed"), key(4, "stranger"), key(5, "stranger"))
    result = EvictionLoop(l1, trigger_watermark=0.99).step()
    assert (result.quota_objects, result.quota_bytes) == (3, 3 * ALIGN)
    assert not l1.contains(key(4, "stranger")) and not l1.contains(key(5, "stranger"))
    assert not l1.contains(key(1, "allowed"))  # coldest of the salt over its quota by one object
    assert l1.contains(key(2, "allowed")) and l1.contains(key(3, "allowed"))
    assert {e.reason for e in events.of_type(L1Removed)} == {EvictionReason.QUOTA}


def test_isolated_lru_default_salt_quota_uses_the_alias() -> None:
    quotas = QuotaTable()
    quotas.set("_default", ALIGN)
    policy = IsolatedLruPolicy(quotas)
    policy.admit(key(1), ALIGN)
    policy.admit(key(2), ALIGN)
    assert policy.quota_victims(_always) == [key(1)]
    assert policy.bytes_by_salt() == {"": 2 * ALIGN}


def test_isolated_lru_keeps_tenants_apart_under_global_pressure() -> None:
    quotas = QuotaTable()
    quotas.set("a", 10 * ALIGN)
    quotas.set("b", ALIGN)
    policy = IsolatedLruPolicy(quotas)
    for i in range(3):
        policy.admit(key(i, "a"), ALIGN)
        policy.admit(key(10 + i, "b"), ALIGN)
    # b is 2 objects over its limit, a is under: pressure hits b first
    assert policy.victims(2 * ALIGN, _always) == [key(10, "b"), key(11, "b")]


def test_locked_objects_are_never_evicted() -> None:
    l1, _, _ = make_l1(slots=4)
    put(l1, key(1), key(2))
    l1.lock_read([key(1)])
    l1.reserve([key(3)], ALIGN)
    assert l1.evict(10 * ALIGN) == (1, ALIGN)
    assert l1.contains(key(1)) and l1.write_extent(key(3)) is not None


def test_on_demand_eviction_lets_steady_pressure_succeed() -> None:
    l1, _, events = make_l1(slots=4)
    for i in range(100):
        assert l1.reserve([key(i)], ALIGN)[0] is not None
        assert l1.finish([key(i)]) == [True]
    assert l1.object_count == 4
    assert [k for k in (key(96), key(97), key(98), key(99)) if l1.contains(k)] == [
        key(96),
        key(97),
        key(98),
        key(99),
    ]
    removed = events.of_type(L1Removed)
    assert removed and all(e.reason == EvictionReason.ON_DEMAND for e in removed)
    assert not events.of_type(AllocationFailed)


def test_on_demand_eviction_fails_only_when_everything_is_locked() -> None:
    l1, _, events = make_l1(slots=2)
    put(l1, key(1), key(2))
    l1.lock_read([key(1), key(2)])
    assert l1.reserve([key(3)], ALIGN) == [None]
    assert events.of_type(AllocationFailed)[0].key == key(3)
    l1.unlock_read([key(2)])
    assert l1.reserve([key(3)], ALIGN)[0] is not None


def test_on_demand_eviction_handles_fragmentation() -> None:
    l1, _, _ = make_l1(slots=4)
    put(l1, key(1), key(2), key(3), key(4))
    l1.lock_read([key(2)])
    # a 2-slot object needs two adjacent free slots: only 3+4 qualify once evicted
    assert l1.reserve([key(9)], 2 * ALIGN)[0] is not None
    assert l1.contains(key(2))


def test_noop_never_evicts() -> None:
    l1, _, _ = make_l1(slots=2, policy="noop")
    put(l1, key(1), key(2))
    assert l1.reserve([key(3)], ALIGN) == [None]
    assert EvictionLoop(l1, trigger_watermark=0.5).step().watermark_objects == 0
    assert isinstance(named_policy("noop", QuotaTable()), NoopPolicy)


def test_watermark_loop_evicts_ratio_of_used_bytes() -> None:
    l1, _, events = make_l1(slots=10)
    put(l1, *(key(i) for i in range(8)))
    loop = EvictionLoop(l1, trigger_watermark=0.9, eviction_ratio=0.25)
    assert loop.step().watermark_objects == 0  # 80% < 90%
    put(l1, key(8))
    result = loop.step()  # 90%: free >= 25% of 9 slots, i.e. 3 of the coldest objects
    assert (result.watermark_objects, result.watermark_bytes) == (3, 3 * ALIGN)
    assert [l1.contains(key(i)) for i in range(4)] == [False, False, False, True]
    assert events.of_type(L1Removed)[-1].reason == EvictionReason.WATERMARK


def test_zero_ratio_leaves_eviction_to_on_demand_only() -> None:
    l1, _, _ = make_l1(slots=4)
    put(l1, *(key(i) for i in range(4)))
    assert EvictionLoop(l1, trigger_watermark=0.5, eviction_ratio=0.0).step().watermark_objects == 0
    assert all(l1.contains(key(i)) for i in range(4))
    assert l1.reserve([key(9)], ALIGN) != [None]  # a full arena still makes room on demand
