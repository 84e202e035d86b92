"""cb_retrieve_pre_computed's gates and lock accounting (cacheblend.md §4.4) with a recording scatter."""

from __future__ import annotations

import pytest

from lmcache.domain.blend_events import BlendScattered
from lmcache.domain.blend_types import BlendMatch
from lmcache.domain.cache_engine import RequestError, RequestKey
from lmcache.domain.hashing import TokenHasher

from ._blend import CS, MODEL, Blend, make_blend

S = list(range(1000, 1012))
H = TokenHasher(CS).chunk_hashes(S)
QUERY = [7] * 5 + S[4:12]  # H[1] at 5, H[2] at 9


def _key(rid: str = "q", worker: int | None = 0, tokens: list[int] | None = None) -> RequestKey:
    tokens = QUERY if tokens is None else tokens
    return RequestKey(MODEL, 1, worker, tokens, 0, len(tokens), rid, "", 1)


def _setup() -> tuple[Blend, list[BlendMatch]]:
    blend = make_blend()
    blend.register_worker()
    blend.store(S)
    result = blend.lookup(QUERY, "q")
    assert result is not None
    return blend, list(result.non_prefix_segments)


def _readers(blend: Blend) -> list[int]:
    return [blend.l1.readers(blend.key_of(h)) for h in H[1:]]


def test_scatter_reads_each_object_once_and_releases_its_lock() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    outcome = blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1)
    assert outcome.processed and outcome.ok
    ((items, tables),) = scatter.calls
    assert [(i.old_st, i.cur_st) for i in items] == [(4, 5), (8, 9)]
    assert tables == [[10, 11, 12, 13]]
    assert _readers(blend) == [0, 0] and blend.stash.locks_held == 0
    event = blend.events.of_type(BlendScattered)[-1]
    assert event.ok and event.matches == 2 and event.bytes_rotated == 100


def test_repeat_call_is_a_no_op_unless_the_destination_blocks_changed() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    assert blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1).ok
    assert blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13, 14]], 1).ok  # grown table
    assert len(scatter.calls) == 1
    blend.l1.lock_read([blend.key_of(H[1])], 1)  # a fresh lock lets a re-scatter read it again
    assert blend.retriever.retrieve(_key(), matches[:1], [[10, 20, 12, 13]], 1).ok  # block 11 became 20
    assert len(scatter.calls) == 2 and [i.cur_st for i in scatter.calls[1][0]] == [5]


def test_allocation_gate_defers_when_all_matches_lie_beyond_and_fails_when_some_do() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    deferred = blend.retriever.retrieve(_key(), matches, [[10]], 1)  # bound = 4 tokens
    assert deferred.processed and deferred.ok and not scatter.calls
    assert _readers(blend) == [1, 1]  # deferred matches keep their locks
    straddle = blend.retriever.retrieve(_key(), matches, [[10, 11, 12]], 1)  # bound 12: H[2] ends at 13
    assert straddle.processed and not straddle.ok and not scatter.calls
    assert _readers(blend) == [1, 1]
    assert blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1).ok
    assert _readers(blend) == [0, 0]


def test_an_empty_match_list_releases_every_stashed_lock() -> None:
    blend, _ = _setup()
    scatter = blend.register_rope()
    outcome = blend.retriever.retrieve(_key(), [], [[10]], 1)
    assert outcome.ok and not scatter.calls
    assert _readers(blend) == [0, 0]


def test_orphans_are_released_once_and_unsent_chunks_keep_nothing() -> None:
    blend, matches = _setup()
    blend.register_rope()
    assert blend.retriever.retrieve(_key(), matches[1:], [[10, 11, 12, 13]], 1).ok
    assert _readers(blend) == [0, 0]
    assert blend.lookups.end_session("q") == 0


def test_end_session_releases_what_no_retrieve_read() -> None:
    blend, matches = _setup()
    blend.register_rope()
    blend.retriever.retrieve(_key(), matches, [[10]], 1)  # deferred
    assert blend.lookups.end_session("q") == 2
    assert _readers(blend) == [0, 0]


def test_a_missing_object_fails_without_writing_and_leaves_no_lock_behind() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    stranger = BlendMatch.at(0, 1, CS, b"\x09" * 32)
    outcome = blend.retriever.retrieve(_key(), [*matches, stranger], [[10, 11, 12, 13]], 1)
    assert outcome.processed and not outcome.ok and not scatter.calls
    assert blend.stash.locks_held == 0 and _readers(blend) == [0, 0]  # nobody will read them now


def test_an_unstashed_present_object_is_read_under_a_fresh_lock() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    blend.lookups.end_session("q")
    assert blend.retriever.retrieve(_key("other"), matches, [[10, 11, 12, 13]], 1).ok
    assert len(scatter.calls) == 1 and _readers(blend) == [0, 0]


def test_check_and_scatter_failures() -> None:
    blend, matches = _setup()
    blend.register_rope(scatter=_failing(check="block id outside 0..63"))
    with pytest.raises(RequestError, match="block id"):
        blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1)
    assert blend.stash.locks_held == 0 and _readers(blend) == [0, 0]
    blend, matches = _setup()
    blend.register_rope(scatter=_failing(scatter=True))
    outcome = blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1)
    assert outcome.processed and not outcome.ok
    assert not blend.events.of_type(BlendScattered)[-1].ok


def test_refusals_name_the_problem() -> None:
    blend, matches = _setup()
    with pytest.raises(RequestError, match="no CB rope registration"):
        blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1)
    with pytest.raises(RequestError, match="no KV registration"):
        blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 99)
    blend.register_rope()
    with pytest.raises(RequestError, match="worker_id"):
        blend.retriever.retrieve(_key(worker=None), matches, [[10, 11, 12, 13]], 1)
    with pytest.raises(RequestError, match="one 4-token chunk"):
        blend.retriever.retrieve(_key(), [BlendMatch(0, 4, 1, 6, H[1])], [[10, 11]], 1)
    with pytest.raises(RequestError, match="block table"):
        blend.retriever.retrieve(_key(), matches, [], 1)


def _failing(check: str = "", scatter: bool = False):  # type: ignore[no-untyped-def]
    from tests.fakes.blend import RecordingScatter

    return RecordingScatter(fail_check=check, fail_scatter=scatter)


def test_end_session_forgets_the_repeat_guard() -> None:
    blend, matches = _setup()
    scatter = blend.register_rope()
    assert blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1).ok
    blend.retriever.forget("q")
    assert blend.retriever.retrieve(_key(), matches, [[10, 11, 12, 13]], 1).ok  # fresh locks, re-scattered
    assert len(scatter.calls) == 2 and _readers(blend) == [0, 0]
