"""Per-adapter L2 eviction in the domain: ARC's scan resistance, the watermark plan, pins, quotas."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lmcache.app.l2_container import l2_policy
from lmcache.domain.arc import ArcPolicy
from lmcache.domain.l2_eviction import L2_EVICTION_POLICIES, L2Capacity
from lmcache.domain.quotas import QuotaTable

from ._storage import key

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey


def _always(_: object) -> bool:
    return True


def _capacity(name: str, capacity: int, watermark: float = 1.0, ratio: float = 0.0) -> L2Capacity:
    return L2Capacity(name, l2_policy(name, capacity, QuotaTable()), capacity, watermark, ratio)


def _hits(cache: L2Capacity, trace: list[ObjectKey], size: int = 1) -> int:
    """Replay a trace of reads on a cache that stores every miss (evicting on demand); count the hits."""
    hits = 0
    for k in trace:
        if k in cache:
            cache.used(k)
            hits += 1
            continue
        cache.evicted(cache.plan(size, _always))
        assert cache.fits(size)
        cache.stored(k, size)
    return hits


def _scan_plus_hot_set() -> list[ObjectKey]:
    hot = [key(i) for i in range(40)]
    trace = hot * 3  # the working set, used three times
    trace += [key(1000 + i) for i in range(300)]  # one pass over cold keys, each used once
    trace += hot * 2  # the working set again
    return trace


def test_arc_keeps_a_hot_set_through_a_scan_that_flushes_lru() -> None:
    trace = _scan_plus_hot_set()
    lru_hits = _hits(_capacity("LRU", 100), trace)
    arc_hits = _hits(_capacity("ARC", 100), trace)
    # Both hit the 40 hot keys twice before the scan (80); after it LRU has lost them all, ARC none.
    assert lru_hits == 80 + 40
    assert arc_hits == 80 + 80
    assert arc_hits > lru_hits


def test_arc_adapts_towards_recency_on_recent_ghost_hits() -> None:
    arc = ArcPolicy(4)
    for i in range(4):
        arc.admit(key(i), 1)
    for victim in arc.victims(2, _always):
        arc.remove(victim)
    assert arc.p == 0
    arc.admit(key(0), 1)  # key 0 was evicted from T1: a B1 hit grows the recency target
    assert arc.p >= 1
    assert arc.frequent_bytes == 1  # and the key comes back as frequent


def test_arc_victims_prefer_t1_until_its_target_then_t2() -> None:
    arc = ArcPolicy(10)
    for i in range(3):
        arc.admit(key(i), 1)
    arc.touch(key(0))  # key 0 -> T2
    assert arc.victims(1, _always) == [key(1)]
    assert arc.victims(3, _always) == [key(1), key(2), key(0)]
    assert arc.victims(3, lambda k: k != key(1)) == [key(2), key(0)]


def test_ghost_lists_stay_bounded() -> None:
    arc = ArcPolicy(10)
    for i in range(1000):
        arc.admit(key(i), 1)
        for victim in arc.victims(max(0, len(arc) - 10), _always):
            arc.remove(victim)
    assert len(arc) <= 10
    assert len(arc._b1) + len(arc._b2) <= 20


def test_watermark_frees_the_ratio_and_on_demand_makes_room() -> None:
    cache = _capacity("LRU", 100, watermark=0.8, ratio=0.25)
    for i in range(7):
        cache.stored(key(i), 10)
    assert cache.plan(5, _always) == []  # 75 < 80: nothing to do
    assert cache.plan(10, _always) == [key(0), key(1)]  # reaches 80: 25% of 70 = 17 bytes, two objects
    cache.stored(key(7), 10)
    victims = cache.plan(10, _always)
    assert victims == [key(0), key(1)]  # 90 >= 80: free 25% of 80 = 20 bytes
    assert cache.evicted(victims) == 20
    assert cache.stats().evicted_objects == 2
    assert cache.used_bytes == 60


def test_on_demand_eviction_without_a_ratio_frees_just_enough() -> None:
    cache = _capacity("LRU", 100, watermark=0.8, ratio=0.0)
    for i in range(10):
        cache.stored(key(i), 10)
    assert cache.plan(25, _always) == [key(0), key(1), key(2)]


def test_pinned_keys_are_skipped() -> None:
    cache = _capacity("LRU", 30)
    for i in range(3):
        cache.stored(key(i), 10)
    assert cache.plan(10, lambda k: k != key(0)) == [key(1)]


def test_noop_never_evicts() -> None:
    cache = _capacity("noop", 30, watermark=0.5, ratio=0.5)
    for i in range(3):
        cache.stored(key(i), 10)
    assert cache.plan(10, _always) == []
    assert not cache.fits(10)


def test_isolated_lru_frees_tenants_over_their_quota() -> None:
    quotas = QuotaTable()
    quotas.set("a", 20)
    cache = L2Capacity("IsolatedLRU", l2_policy("IsolatedLRU", 1000, quotas), 1000)
    for i in range(4):
        cache.stored(key(i, "a"), 10)
    cache.stored(key(9, "b"), 10)  # no quota: limit 0
    assert cache.plan(10, _always) == [key(0, "a"), key(1, "a"), key(9, "b")]


def test_a_stored_key_again_is_a_use_not_a_second_object() -> None:
    cache = _capacity("LRU", 100)
    cache.stored(key(1), 10)
    cache.stored(key(2), 10)
    cache.stored(key(1), 12)
    assert (len(cache), cache.used_bytes) == (2, 22)
    assert cache.plan(85, _always) == [key(2)]


def test_unknown_policy_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="LRU, ARC, IsolatedLRU, noop"):
        l2_policy("MRU", 10, None)
    assert L2_EVICTION_POLICIES == ("LRU", "ARC", "IsolatedLRU", "noop")


def test_without_a_capacity_only_quotas_apply() -> None:
    quotas = QuotaTable()
    quotas.set("a", 10)
    cache = L2Capacity("IsolatedLRU", l2_policy("IsolatedLRU", 0, quotas), 0)
    for i in range(3):
        cache.stored(key(i, "a"), 10)
    assert cache.fits(10**12)
    assert cache.plan(10**12, _always) == [key(0, "a"), key(1, "a")]
