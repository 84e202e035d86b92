from __future__ import annotations

import pytest

from lmcache.domain.fleet_directory import KeyDirectory
from lmcache.domain.fleet_eviction import FleetQuotas, plan_evictions
from lmcache.domain.keys import ObjectKey
from lmcache.domain.units import GIB

KIB = 1024


def key(n: int, salt: str) -> ObjectKey:
    return ObjectKey(n.to_bytes(4, "big"), "m", 0x01000100, 0, salt)


def fill(directory: KeyDirectory, salt: str, count: int, nbytes: int) -> list[ObjectKey]:
    keys = [key(i, salt) for i in range(count)]
    for k in keys:
        directory.store(k, nbytes, "a")
    return keys


def quota(salt: str, limit_bytes: int) -> FleetQuotas:
    q = FleetQuotas()
    q.set(salt, limit_bytes / GIB)
    return q


def test_nothing_is_planned_below_the_watermark() -> None:
    d = KeyDirectory()
    fill(d, "t", 10, 100 * KIB)  # 1000 KiB used
    assert plan_evictions(d, quota("t", 1001 * KIB), 1.0, 0.2) == []
    assert plan_evictions(d, quota("t", 1250 * KIB), 0.8, 0.2) != []  # 1000 >= 0.8 x 1250
    assert plan_evictions(d, quota("t", 1251 * KIB), 0.8, 0.2) == []


def test_plan_takes_the_ratio_of_keys_from_the_cold_end() -> None:
    d = KeyDirectory()
    keys = fill(d, "t", 10, 100 * KIB)
    d.touch(keys[0])  # key 0 becomes the most recent
    [plan] = plan_evictions(d, quota("t", 1000 * KIB), 1.0, 0.2)
    assert plan.cache_salt == "t"
    assert plan.keys == (keys[1], keys[2])
    assert plan.usage_bytes == 1000 * KIB and plan.limit_bytes == 1000 * KIB
    [plan] = plan_evictions(d, quota("t", 1000 * KIB), 1.0, 0.25)
    assert len(plan.keys) == 3  # ceil(2.5)
    [plan] = plan_evictions(d, quota("t", 1000 * KIB), 1.0, 0.1)
    assert plan.keys == (keys[1],)


def test_repeated_cycles_bring_usage_under_the_watermark() -> None:
    d = KeyDirectory()
    fill(d, "t", 20, 100 * KIB)
    q = quota("t", 1000 * KIB)
    cycles = 0
    while plans := plan_evictions(d, q, 0.9, 0.2):
        d.forget(plans[0].keys)
        cycles += 1
    assert d.usage("t") < 0.9 * 1000 * KIB
    assert cycles == 4  # 20 -> 16 -> 12 -> 9 -> 7 keys (ceil of 20 % each time); 9 x 100 KiB >= 90 %
    assert len(d) == 7


def test_salts_without_quota_are_exempt() -> None:
    d = KeyDirectory()
    fill(d, "free", 50, GIB)  # far over any size, but no quota
    fill(d, "", 5, 100 * KIB)
    q = quota("_default", 100 * KIB)
    plans = plan_evictions(d, q, 1.0, 0.2)
    assert [p.cache_salt for p in plans] == [""]
    assert plan_evictions(d, FleetQuotas(), 1.0, 1.0) == []


def test_zero_ratio_plans_nothing_and_bounds_are_checked() -> None:
    d = KeyDirectory()
    fill(d, "t", 5, KIB)
    assert plan_evictions(d, quota("t", 0), 1.0, 0.0) == []
    assert len(plan_evictions(d, quota("t", 0), 1.0, 1.0)[0].keys) == 5
    with pytest.raises(ValueError):
        plan_evictions(d, quota("t", 0), 0.0, 0.2)
    with pytest.raises(ValueError):
        plan_evictions(d, quota("t", 0), 1.0, 1.5)


def test_quotas_keep_the_number_sent_and_reject_bad_values() -> None:
    q = FleetQuotas()
    assert q.set("_default", 0.1) == ""
    assert q.get_gb("_default") == 0.1 and q.get_gb("") == 0.1
    assert q.limit_bytes("") == int(0.1 * GIB)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            q.set("t", bad)
    with pytest.raises(ValueError):
        q.set("a/b", 1)
    assert q.delete("_default") and not q.delete("_default")
