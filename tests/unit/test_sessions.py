from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.domain.digest_cache import DigestCache
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.session_types import LookupGrid
from lmcache.domain.sessions import SessionManager

from ._storage import ALIGN, make_l1

if TYPE_CHECKING:
    from lmcache.domain.l1_manager import L1Manager
    from tests.fakes.clock import FakeClock

C = 4
TOKENS = list(range(1, 17))  # 4 chunks


def _setup(
    ranks: tuple[int, ...] = (1, 2), readers: int = 1
) -> tuple[L1Manager, FakeClock, SessionManager, LookupGrid, TokenHasher]:
    l1, clock, _ = make_l1(slots=64)
    hasher = TokenHasher(C)
    sessions = SessionManager(l1, hasher, clock, ttl_s=600, digests=DigestCache())
    grid = LookupGrid("m", ranks, (0,), "", readers)
    keys = grid.keys_for(hasher.chunk_hashes(TOKENS))
    l1.reserve(keys, ALIGN)
    l1.finish(keys, read_locks=readers)
    return l1, clock, sessions, grid, hasher


def test_prefetch_result_is_handed_over_once() -> None:
    _, _, sessions, grid, _ = _setup()
    sessions.begin_lookup("r1", TOKENS, len(TOKENS), grid)
    assert sessions.take_prefetch_result("r1") is None  # running
    job = sessions.job("r1")
    assert job is not None
    job.set_result(3)
    assert sessions.take_prefetch_result("r1") == 3
    assert sessions.take_prefetch_result("r1") == 0
    assert sessions.take_prefetch_result("unknown") == 0


def test_lookup_without_full_chunk_finishes_with_zero() -> None:
    _, _, sessions, grid, _ = _setup()
    assert sessions.begin_lookup("r", TOKENS[:3], 3, grid) == []
    assert sessions.take_prefetch_result("r") == 0


def test_hashes_are_cached_per_request() -> None:
    _, _, sessions, grid, hasher = _setup()
    sessions.begin_lookup("r", TOKENS, 16, grid)
    session = sessions.get("r")
    before = session.chain.chunks_hashed_total
    assert sessions.hashes("r", TOKENS, 8, 16) == hasher.chunk_hashes(TOKENS)[2:4]
    assert session.chain.chunks_hashed_total == before


def test_free_lookup_locks_releases_hit_chunks_once_for_all_ranks() -> None:
    l1, _, sessions, grid, _hasher = _setup(readers=2)
    digests = sessions.begin_lookup("r", TOKENS, 16, grid)
    job = sessions.job("r")
    assert job is not None
    assert sessions.free_lookup_locks("r", 0, 16) == 0  # still running: nothing
    job.set_result(3)  # finished but not polled: consumed by free_lookup_locks
    # [2, 14) fully contains chunks 1 and 2; both are inside the hit of 3 -> 2 chunks x 2 ranks
    assert sessions.free_lookup_locks("r", 2, 14) == 4
    assert all(l1.readers(k) == 0 for k in grid.keys_for(digests[1:3]))
    assert all(l1.readers(k) == 2 for k in grid.keys_for(digests[3:4]))  # past the hit: untouched
    assert sessions.free_lookup_locks("r", 0, 8) == 2  # chunk 0; chunk 1 not again
    assert sessions.free_lookup_locks("r", 8, 8) == 0
    assert sessions.take_prefetch_result("r") == 0  # consumed already


def test_release_rank_once_for_failed_retrieve() -> None:
    l1, _, sessions, grid, _ = _setup(readers=1)
    digests = sessions.begin_lookup("r", TOKENS, 16, grid)
    job = sessions.job("r")
    assert job is not None
    job.set_result(4)
    sessions.take_prefetch_result("r")
    assert sessions.release_rank_once("r", 1) == 4
    assert sessions.release_rank_once("r", 1) == 0
    assert all(l1.readers(k) == 0 for k in grid.keys_for(digests, ranks=(1,)))
    assert all(l1.readers(k) == 1 for k in grid.keys_for(digests, ranks=(2,)))


def test_end_session_touches_keys_and_keeps_locks() -> None:
    l1, _, sessions, grid, _ = _setup()
    other_grid = LookupGrid("other", (1,), (0,), "", 1)
    cold = other_grid.keys_for([b"x" * 32])
    l1.reserve(cold, ALIGN)
    l1.finish(cold)  # most recently used before the touch
    digests = sessions.begin_lookup("r", TOKENS, 16, grid)
    keys = grid.keys_for(digests)
    l1.unlock_read(keys)
    assert sessions.end_session("r") is True
    assert sessions.end_session("r") is False
    assert all(l1.readers(k) == 0 for k in keys)
    l1.evict(ALIGN)
    assert not l1.contains(cold[0])  # the session's keys were touched after it
    assert all(l1.contains(k) for k in keys)


def test_abandoned_sessions_expire_after_creation_ttl() -> None:
    _, clock, sessions, grid, _ = _setup()
    sessions.begin_lookup("old", TOKENS, 16, grid)
    clock.advance(300)
    sessions.get("young")
    clock.advance(300)
    assert sessions.expire() == ["old"]
    assert len(sessions) == 1
    clock.advance(300)
    assert sessions.expire() == ["young"]


def test_the_sessions_of_a_worker_that_is_gone_end_with_it() -> None:
    _, _, sessions, grid, _ = _setup()
    sessions.begin_lookup("scheduler-only", TOKENS, len(TOKENS), grid)
    for rid, instance in (("a", 7), ("b", 7), ("b", 8), ("c", 8)):
        sessions.hashes(rid, TOKENS, 0, 8)
        sessions.attach(rid, instance)
    assert len(sessions) == 4
    assert sorted(sessions.end_instance(7)) == ["a", "b"]
    assert len(sessions) == 2 and sessions.end_instance(7) == []
    assert sessions.end_instance(8) == ["c"] and len(sessions) == 1  # the scheduler's stays for its TTL
