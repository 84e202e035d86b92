"""The local fingerprint index (cacheblend.md §3.2-3.6): registration rules, matching, scope, strikes."""

from __future__ import annotations

import pytest

from lmcache.adapters.transfer.fingerprint_numpy import NumpyFingerprintProbe
from lmcache.domain.blend_index import FingerprintIndex
from lmcache.domain.blend_types import BlendMatch, BlendScope
from lmcache.domain.hashing import TokenHasher
from tests.fakes.blend import FakeProbe

SCOPE = BlendScope("m", 1, "")
PROBES = [FakeProbe, NumpyFingerprintProbe]


def _hashes(tokens: list[int], cs: int = 4) -> list[bytes]:
    return TokenHasher(cs).chunk_hashes(tokens)


def _pairs(found: list[BlendMatch]) -> list[tuple[int, int, bytes]]:
    return [(m.old_st, m.cur_st, m.chunk_hash) for m in found]


@pytest.fixture(params=PROBES)
def index(request: pytest.FixtureRequest) -> FingerprintIndex:
    return FingerprintIndex(4, request.param())


def test_v2_store_then_shifted_match(index: FingerprintIndex) -> None:
    stored = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]
    h = _hashes(stored)
    assert h[2].hex() == "696ee90f57ee53ebf4c5b535fa44894430271e4a7375c16e4c4bb73f43642ded"
    assert index.register(SCOPE, stored, 0, h) == 2  # chunk 0 is skipped
    found = index.match(SCOPE, [99, 98, 30, 31, 32, 33, 20, 21, 22, 23, 5])
    assert found == [BlendMatch(8, 12, 2, 6, h[2]), BlendMatch(4, 8, 6, 10, h[1])]
    assert index.match(SCOPE, [10, 11, 12, 13, 0]) == []
    assert index.match(SCOPE, [30, 31, 32]) == []  # shorter than a chunk


def test_v3_one_result_per_chunk_at_its_first_position(index: FingerprintIndex) -> None:
    stored = [1, 1, 1, 1, 5, 6, 7, 8, 7, 8, 9, 10]
    _, a, b = _hashes(stored)
    index.register(SCOPE, stored, 0, _hashes(stored))
    found = index.match(SCOPE, [40, 41, 5, 6, 7, 8, 9, 10, 5, 6, 7, 8])
    assert _pairs(found) == [(4, 2, a), (8, 4, b)]


def test_v4_latest_registration_of_the_same_text_wins(index: FingerprintIndex) -> None:
    first, second = [1, 2, 3, 4, 50, 51, 52, 53], [9, 9, 9, 9, 8, 8, 8, 8, 50, 51, 52, 53]
    index.register(SCOPE, first, 0, _hashes(first))
    index.register(SCOPE, second, 0, _hashes(second))
    dy = _hashes(second)[2]
    assert _pairs(index.match(SCOPE, [7, 50, 51, 52, 53])) == [(8, 1, dy)]
    assert len(index) == 2  # Dx gave its fingerprint slot to Dy


def test_a_chain_hash_already_indexed_keeps_its_first_position(index: FingerprintIndex) -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    h = _hashes(tokens)
    assert index.register(SCOPE, tokens, 0, h) == 2
    assert index.register(SCOPE, tokens, 1, h[1:]) == 0
    assert _pairs(index.match(SCOPE, [0, 5, 6, 7, 8])) == [(4, 1, h[1])]


def test_registration_starts_at_the_given_chunk(index: FingerprintIndex) -> None:
    tokens = list(range(100, 120))
    h = _hashes(tokens)
    assert index.register(SCOPE, tokens, 3, h[3:5]) == 2  # chunks 3 and 4 of a later store
    assert _pairs(index.match(SCOPE, tokens[12:20])) == [(12, 0, h[3]), (16, 4, h[4])]
    with pytest.raises(ValueError, match="outside the tokens"):
        index.register(SCOPE, tokens, 4, h[3:5])


def test_matching_is_scoped_by_model_world_size_and_salt(index: FingerprintIndex) -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    index.register(SCOPE, tokens, 0, _hashes(tokens))
    query = [0, 5, 6, 7, 8]
    for other in (BlendScope("m", 1, "t2"), BlendScope("m", 2, ""), BlendScope("other", 1, "")):
        assert index.match(other, query) == []
        assert index.strike(other, [_hashes(tokens)[1]]) == 0  # a foreign miss strikes nothing
    assert len(index.match(SCOPE, query)) == 1
    assert index.scopes() == {"m@1@": 1}


def test_two_strikes_remove_an_entry_and_a_find_resets_them(index: FingerprintIndex) -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    h1 = _hashes(tokens)[1]
    index.register(SCOPE, tokens, 0, _hashes(tokens))
    assert index.strike(SCOPE, [h1]) == 0
    index.found(SCOPE, [h1])
    assert index.strike(SCOPE, [h1]) == 0  # the find reset the count
    assert index.strike(SCOPE, [h1]) == 1
    assert index.match(SCOPE, [0, 5, 6, 7, 8]) == [] and len(index) == 0
    assert index.removed_stale_total == 1
    assert index.register(SCOPE, tokens, 0, _hashes(tokens)) == 1  # a later store brings it back


def test_the_oldest_registrations_leave_past_max_entries() -> None:
    probe = FakeProbe(capacity=3)
    index = FingerprintIndex(4, probe, max_entries=4)
    for base in range(6):
        tokens = [0, 0, 0, 0, *range(base * 10, base * 10 + 4)]
        index.register(SCOPE, tokens, 0, _hashes(tokens))
    assert len(index) == 4 and index.dropped_oldest_total == 2
    assert index.match(SCOPE, [0, 1, 2, 3]) == []  # the first two stores are gone
    assert len(index.match(SCOPE, [50, 51, 52, 53])) == 1
    assert probe.rebuilds >= 1  # the filter grew with the index


def test_numpy_probe_matches_the_reference_on_a_big_index() -> None:
    fast, slow = FingerprintIndex(16, NumpyFingerprintProbe()), FingerprintIndex(16, FakeProbe())
    docs = [[d * 1000 + i for i in range(64)] for d in range(300)]
    for doc in docs:
        prompt = [7] * 16 + doc
        for index in (fast, slow):
            index.register(SCOPE, prompt, 0, TokenHasher(16).chunk_hashes(prompt))
    query = [1, 2, 3] + docs[5] + [9] * 5 + docs[200][16:] + docs[17]
    assert fast.match(SCOPE, query) == slow.match(SCOPE, query)
    assert len(fast.match(SCOPE, query)) == 4 + 3 + 4
