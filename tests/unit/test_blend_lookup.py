"""cb_unified_lookup as a job (cacheblend.md §3.4, §5, §7) over a real engine with fake ports."""

from __future__ import annotations

import pytest

from lmcache.domain.blend_events import BlendLookupFinished
from lmcache.domain.blend_types import BlendMatch, UnifiedLookupResult
from lmcache.domain.cache_engine import RequestError
from lmcache.domain.hashing import TokenHasher
from lmcache.ports.blend import FleetMatch
from tests.fakes.blend import FakeFleet
from tests.fakes.l2_adapter import FakeL2Adapter

from ._blend import CS, Blend, layout, make_blend

S = list(range(1000, 1012))  # 3 chunks of 4
H = TokenHasher(CS).chunk_hashes(S)


def _ready(blend: Blend, tokens: list[int], rid: str, **kw: object) -> UnifiedLookupResult:
    result = blend.lookup(tokens, rid, **kw)  # type: ignore[arg-type]
    assert result is not None
    return result


def _pairs(result: UnifiedLookupResult) -> list[tuple[int, int, bytes]]:
    return [(m.old_st, m.cur_st, m.chunk_hash) for m in result.non_prefix_segments]


def test_v5_table_with_everything_in_l1() -> None:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    shifted = _ready(blend, [7] * 5 + S[4:12] + [8] * 3, "q1")
    assert shifted.prefix_coverage_tokens == 0 and _pairs(shifted) == [(4, 5, H[1]), (8, 9, H[2])]
    gap = _ready(blend, S[0:8] + [9] * 4 + S[8:12], "q2")
    assert gap.prefix_coverage_tokens == 8 and _pairs(gap) == [(8, 12, H[2])]
    head = _ready(blend, S[0:4] + [5] * 3 + S[0:4], "q3")
    assert head.prefix_coverage_tokens == 4 and _pairs(head) == []  # chunk 0 is never fingerprinted
    assert blend.lookups.active == 0
    finished = blend.events.of_type(BlendLookupFinished)
    assert [(e.found, e.returned, e.source) for e in finished] == [
        (2, 2, "local"),
        (1, 1, "local"),
        (0, 0, "local"),
    ]


def test_found_chunks_stay_locked_in_the_stash_until_end_session() -> None:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    _ready(blend, [7] * 5 + S[4:12], "q")
    assert blend.l1.readers(blend.key_of(H[1])) == 1 and blend.l1.readers(blend.key_of(H[2])) == 1
    assert blend.stash.locks_held == 2
    assert blend.lookups.end_session("q") == 2
    assert blend.l1.readers(blend.key_of(H[1])) == 0 and blend.stash.locks_held == 0


def test_a_repeated_lookup_releases_the_previous_stash_first() -> None:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    _ready(blend, [7] * 5 + S[4:12], "q")
    _ready(blend, [7] * 5 + S[4:12], "q")
    assert blend.l1.readers(blend.key_of(H[1])) == 1  # not 2
    _ready(blend, [1, 2, 3, 4, 5], "q")
    assert blend.l1.readers(blend.key_of(H[1])) == 0


def test_no_layout_answers_empty_at_once_and_readers_are_checked_on_a_known_model() -> None:
    blend = make_blend()
    assert blend.lookup([7] * 5 + S, "q") == UnifiedLookupResult(0, (), ())
    blend.register_worker()
    with pytest.raises(RequestError, match="num_kv_readers"):
        blend.lookup(S, "bad", readers=0)
    assert blend.lookups.active == 0


def test_stale_candidates_are_struck_twice_then_removed() -> None:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    blend.l1.clear(force=True)
    query = [7] * 5 + S[4:12]
    for rid in ("a", "b"):
        assert _pairs(_ready(blend, query, rid)) == []
    assert len(blend.index) == 0
    finished = blend.events.of_type(BlendLookupFinished)
    assert [(e.candidates, e.stale) for e in finished] == [(2, 2), (2, 2)]
    assert _ready(blend, query, "c").non_prefix_segments == ()


def test_a_foreign_salt_neither_matches_nor_strikes() -> None:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    query = [7] * 5 + S[4:12]
    for rid in ("t1", "t2"):
        assert _ready(blend, query, rid, salt="t2").non_prefix_segments == ()
    assert len(_ready(blend, query, "own").non_prefix_segments) == 2


def test_with_l2_the_job_answers_none_while_loading_then_loads_candidates() -> None:
    adapter = FakeL2Adapter()
    blend = make_blend(adapters=[adapter])
    blend.register_worker()
    blend.store(S)
    size = layout().object_bytes
    for h in H:
        adapter.objects[blend.key_of(h)] = bytes(size)
    blend.l1.clear(force=True)
    query = [7] * 5 + S[4:12]
    assert blend.lookup(query, "q") is None  # prefix leg pending
    blend.loop.run()
    assert blend.lookup(query, "ignored-key-of-later-calls") is None  # another request: its own job
    assert blend.lookup(query, "q") is None  # sparse prefetch pending
    assert blend.lookups.active == 2
    blend.loop.run()
    result = _ready(blend, [0], "q")  # later calls ignore their own key
    assert _pairs(result) == [(4, 5, H[1]), (8, 9, H[2])]
    assert blend.l1.readers(blend.key_of(H[1])) == 1
    assert not adapter.locks  # the L2 lookup locks were released


def test_partial_candidates_are_released_without_a_strike() -> None:
    adapter = FakeL2Adapter()
    blend = make_blend(adapters=[adapter])
    blend.register_worker()
    blend.store(S)
    blend.l1.clear(force=True)
    size = layout().object_bytes
    adapter.objects[blend.key_of(H[1])] = bytes(size)
    adapter.objects[blend.key_of(H[2])] = bytes(size - 1)  # present, but its load fails
    query = [7] * 5 + S[4:12]
    for rid in ("a", "b"):
        assert blend.lookup(query, rid) is None
        blend.loop.run()
        assert blend.lookup(query, rid) is None
        blend.loop.run()
        assert _pairs(_ready(blend, query, rid)) == [(4, 5, H[1])]
    assert len(blend.index) == 2  # no strikes for the partial chunk
    assert [e.partial for e in blend.events.of_type(BlendLookupFinished)] == [1, 1]


def test_world_size_two_locks_every_rank_and_a_missing_rank_is_stale() -> None:
    blend = make_blend()
    blend.register_worker(world_size=2)
    blend.store(S, "r0", worker_id=0, world_size=2)
    query = [7] * 5 + S[4:12]
    assert _pairs(_ready(blend, query, "q1", world_size=2)) == []  # rank 1 never stored
    blend.store(S, "r1", worker_id=1, world_size=2)
    result = _ready(blend, query, "q2", world_size=2)
    assert _pairs(result) == [(4, 5, H[1]), (8, 9, H[2])]
    for rank in (0, 1):
        assert blend.l1.readers(blend.key_of(H[1], rank, 2)) == 1


def test_fleet_matches_are_used_when_they_arrive_in_time() -> None:
    fleet = FakeFleet(timeout_s=1.0)
    blend = make_blend(fleet=fleet)
    blend.register_worker()
    blend.store(S)
    assert fleet.published[0][1:] == (S, H, 0)  # the whole range, chunk 0 included
    query = [7] * 5 + S[4:12]
    assert blend.lookup(query, "q") is None
    fleet.futures[0].set_result([FleetMatch(H[2], 8, 9), FleetMatch(H[2], 8, 1), FleetMatch(b"\x01", 0, 99)])
    result = _ready(blend, query, "q")
    assert _pairs(result) == [(8, 9, H[2])]  # one per hash, inside the prompt only
    assert blend.events.of_type(BlendLookupFinished)[-1].source == "fleet"


@pytest.mark.parametrize("failure", ["timeout", "error"])
def test_fleet_timeout_or_error_falls_back_to_local_matches(failure: str) -> None:
    fleet = FakeFleet(timeout_s=1.0)
    blend = make_blend(fleet=fleet)
    blend.register_worker()
    blend.store(S)
    query = [7] * 5 + S[4:12]
    assert blend.lookup(query, "q") is None
    if failure == "timeout":
        blend.clock.advance(0.5)
        assert blend.lookup(query, "q") is None
        blend.clock.advance(0.6)
    else:
        fleet.futures[0].set_exception(ConnectionError("down"))
    assert _pairs(_ready(blend, query, "q")) == [(4, 5, H[1]), (8, 9, H[2])]
    assert blend.lookups.fleet_fallbacks == 1
    assert blend.events.of_type(BlendLookupFinished)[-1].source == "fleet_fallback"


def test_segmented_prefix_keeps_what_loaded_past_a_gap() -> None:
    adapter = FakeL2Adapter()
    blend = make_blend(adapters=[adapter], segmented=True)
    blend.register_worker()
    tokens = list(range(2000, 2016))  # 4 chunks
    hashes = TokenHasher(CS).chunk_hashes(tokens)
    blend.store(tokens)
    size = layout().object_bytes
    for i in (0, 2, 3):
        adapter.objects[blend.key_of(hashes[i])] = bytes(size)
    blend.l1.clear(force=True)
    assert blend.lookup(tokens, "q") is None
    blend.loop.run()
    assert blend.lookup(tokens, "q") is None  # the gap chunk is still a candidate (same position, not kept)
    blend.loop.run()
    result = _ready(blend, tokens, "q")
    assert result.prefix_coverage_tokens == 4
    assert result.segmented_prefix_segments == (
        BlendMatch(8, 12, 8, 12, hashes[2]),
        BlendMatch(12, 16, 12, 16, hashes[3]),
    )
    assert result.non_prefix_segments == ()  # the same-position candidates ride the segmented prefix
    assert blend.engine.sessions.free_lookup_locks("q", 0, 16) == 1  # the prefix chunk, as usual
    assert blend.stash.locks_held == 2
    blend.lookups.end_session("q")
    assert all(blend.l1.readers(blend.key_of(h)) == 0 for h in hashes)


def test_expiry_releases_jobs_and_stashes_and_jobs_are_bounded() -> None:
    adapter = FakeL2Adapter()
    blend = make_blend(adapters=[adapter])
    blend.register_worker()
    blend.store(S)
    blend.lookups.max_jobs = 1
    assert blend.lookup([7] * 5 + S[4:12], "slow") is None
    with pytest.raises(RequestError, match="in flight"):
        blend.lookup(S, "second")
    blend.clock.advance(601)
    assert blend.lookups.expire(600) == ["slow"]
    blend.loop.run()  # the abandoned prefetch finishes: nothing it locked stays locked
    assert all(blend.l1.readers(blend.key_of(h)) == 0 for h in H[1:])
