"""Reuse distances against a brute-force count of distinct keys between two uses."""

from __future__ import annotations

import random

import pytest

from lmcache.domain.reuse_distance import ReuseDistances


def brute(stream: list[int]) -> tuple[list[int], int]:
    out, cold, last = [], 0, {}
    for i, key in enumerate(stream):
        if key in last:
            out.append(len(set(stream[last[key] + 1 : i])))
        else:
            cold += 1
        last[key] = i
    return out, cold


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    stream = [int(rng.paretovariate(1.1)) % 50 for _ in range(800)]
    reuse = ReuseDistances(limit=1000)
    for key in stream:
        reuse.access(key)
    distances, cold = brute(stream)
    assert list(reuse.distances) == distances and reuse.cold == cold and reuse.distinct == len(set(stream))


def test_window_and_percentiles() -> None:
    reuse = ReuseDistances(limit=6)
    for key in "abcabcab":
        reuse.access(key)
    assert reuse.accesses == 6 and reuse.ignored == 2 and list(reuse.distances) == [2, 2, 2]
    assert reuse.percentiles() == {"p50": 2, "p90": 2, "p99": 2, "max": 2}
    assert ReuseDistances(limit=3).percentiles() == {}
    with pytest.raises(ValueError):
        ReuseDistances(limit=0)
