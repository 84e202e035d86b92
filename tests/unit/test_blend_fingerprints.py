"""The CacheBlend rolling hash (cacheblend.md §3.1, vectors V1-V2) in the reference and numpy versions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lmcache.adapters.transfer.fingerprint_numpy import BLEND_BASE, NumpyFingerprintProbe
from lmcache.domain.fleet_blend import rolling_fingerprints
from lmcache.domain.hashing import TokenError
from tests.fakes.blend import FakeProbe

PROBES = [FakeProbe, NumpyFingerprintProbe]
V2_QUERY = [99, 98, 30, 31, 32, 33, 20, 21, 22, 23, 5]
V2_ROLLED = [
    4565373609943948494,
    3399257514936273811,
    1794562497054995822,
    17775026947917955932,
    3272692444222998578,
    15381618230179212816,
    8010614651811359126,
    5544335028964767615,
]


def _rolling(probe: object, tokens: list[int], cs: int) -> list[int]:
    """Every window's fingerprint (the reference probe rolls in Python)."""
    if isinstance(probe, NumpyFingerprintProbe):
        return [int(x) for x in probe.rolling(tokens, cs)]
    return rolling_fingerprints(tokens, cs)


@pytest.mark.parametrize("make", PROBES)
def test_v1_raw_hashes(make: type) -> None:
    probe = make()
    assert probe.chunk_fingerprints([1, 2, 3, 4], 4) == [17976439338477494242]
    assert 17976439338477494242 == 0xF9792455C84F1FE2 and 17976439338477494242 % (1 << 20) == 991202
    assert probe.chunk_fingerprints(list(range(1, 10)), 4) == [17976439338477494242, 8111320847091128274]
    assert _rolling(probe, [9, 1, 2, 3, 4, 7], 4) == [
        9101885446244535163,
        17976439338477494242,
        15510159715630902752,
    ]
    assert pow(BLEND_BASE, 3, 1 << 64) == 6938460308862072877


@pytest.mark.parametrize("make", PROBES)
def test_v2_chunk_and_query_fingerprints(make: type) -> None:
    probe = make()
    stored = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]
    assert probe.chunk_fingerprints(stored, 4) == [
        14226666806567722430,
        8010614651811359126,
        1794562497054995822,
    ]
    assert _rolling(probe, V2_QUERY, 4) == V2_ROLLED
    assert _rolling(probe, [1, 2, 3], 4) == []


def test_numpy_agrees_with_the_reference_on_long_random_prompts() -> None:
    rng = random.Random(7)
    tokens = [rng.randrange(0, 1 << 32) for _ in range(5000)]
    fast, slow = NumpyFingerprintProbe(), FakeProbe()
    for cs in (1, 4, 16, 256, 5000):
        assert _rolling(fast, tokens, cs) == _rolling(slow, tokens, cs)
        assert fast.chunk_fingerprints(tokens, cs) == slow.chunk_fingerprints(tokens, cs)


def test_filter_never_misses_what_was_added_and_mostly_rejects_the_rest() -> None:
    probe = NumpyFingerprintProbe()
    rng = random.Random(1)
    tokens = [rng.randrange(0, 50_000) for _ in range(20_000)]
    fps = probe.rolling(tokens, 16)
    chosen = sorted(rng.sample(range(len(fps)), 200))
    probe.add(int(fps[i]) for i in chosen)
    positions, values = probe.candidates(tokens, 16)
    assert set(chosen) <= set(positions)
    assert values == [int(fps[i]) for i in positions]
    assert len(positions) < 200 + len(fps) // 100  # the filter is sparse
    probe.discard(int(fps[i]) for i in chosen)
    assert probe.candidates(tokens, 16) == ([], [])


def test_filter_rebuild_resizes_and_keeps_exactly_the_given_fingerprints() -> None:
    probe = NumpyFingerprintProbe()
    small = probe.capacity
    fps = list(range(1, 100_000, 7))
    probe.rebuild(fps, 4 * small)
    assert probe.capacity >= 4 * small
    tokens = list(range(64))
    for fp in probe.rolling(tokens, 4).tolist()[:3]:
        probe.rebuild([fp], 10)
        assert fp in probe.candidates(tokens, 4)[1]


def test_filter_counts_saturate_instead_of_wrapping() -> None:
    probe = NumpyFingerprintProbe()
    probe.add([5] * 300)
    probe.discard([5] * 300)
    assert probe.candidates(np.array([0, 0, 0, 5], dtype=np.uint64), 1)[0] == [3]


def test_token_ids_must_be_unsigned_32_bit() -> None:
    with pytest.raises(TokenError):
        NumpyFingerprintProbe().rolling([1, -1, 2], 2)
    with pytest.raises(TokenError):
        NumpyFingerprintProbe().chunk_fingerprints([1 << 32, 1], 2)


def test_prompts_longer_than_the_kept_power_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmcache.adapters.transfer.fingerprint_numpy as module

    monkeypatch.setattr(module, "_KEPT_POWERS", 64)
    probe = NumpyFingerprintProbe()
    tokens = list(range(300))
    assert _rolling(probe, tokens, 16) == rolling_fingerprints(tokens, 16)
    assert len(probe._pow) <= 64  # the long query's tables were not kept
    assert _rolling(probe, tokens[:40], 16) == rolling_fingerprints(tokens[:40], 16)
