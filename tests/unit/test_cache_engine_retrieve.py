"""CacheEngine retrieve, sessions and clear (wire-protocol.md §5.4, §5.6, §5.7) over fake ports.

Assertions are on outcomes: the engine's blocks after a retrieve, read-lock counts, hit counts and the
KV-event log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lmcache.domain.cache_engine import RequestError, TransferOutcome
from lmcache.domain.events import TransferCompleted, TransferKind
from tests.fakes.l2_adapter import FakeL2Adapter
from tests.unit._engine import BS, CS, MODEL, OBJECT_BYTES, Server, blocks, make_server, request

if TYPE_CHECKING:
    from lmcache.domain.cache_engine import RequestKey
    from tests.fakes.kv_transfer import FakeKVTransfer

TOKENS = list(range(100, 100 + 3 * CS))
STORED = blocks(1, 3)[0]  # blocks 1..6 hold the three chunks
FRESH = blocks(20, 3)  # where retrieves write


def stored_and_looked_up(readers: int = 1, tokens: list[int] = TOKENS) -> tuple[Server, FakeKVTransfer]:
    """A server whose worker 1 stored TOKENS, then a lookup of `tokens` holding `readers` locks each."""
    s = make_server()
    engine = s.register()
    assert s.engine.store(request(TOKENS, "w"), 1, blocks(1, 3)).ok
    s.engine.lookup(request(tokens, "req", worker_id=None, readers=readers))
    assert s.engine.query("req") == len(tokens) // CS
    return s, engine


def scheduler(start: int = 0, end: int | None = None) -> RequestKey:
    """The scheduler's key of TOKENS (all ranks, two readers)."""
    return request(TOKENS, start=start, end=end, worker_id=None, readers=2)


def fresh_blocks(engine: FakeKVTransfer) -> list[bytes | None]:
    return [engine.blocks.get((0, b)) for b in FRESH[0]]


def test_retrieve_restores_the_blocks_and_releases_one_lock_per_object() -> None:
    s, engine = stored_and_looked_up(readers=2)
    for b in FRESH[0]:
        del engine.blocks[(0, b)]
    assert s.engine.retrieve(request(TOKENS), 1, FRESH, 0) == TransferOutcome(True, True)
    assert fresh_blocks(engine) == [engine.blocks[(0, b)] for b in STORED]
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    [done] = [e for e in s.events.of_type(TransferCompleted) if e.kind is TransferKind.RETRIEVE]
    assert (done.ok, done.tokens, done.nbytes) == (True, 3 * CS, 3 * OBJECT_BYTES)


def test_retrieve_without_a_lookup_is_a_miss() -> None:
    s = make_server()
    engine = s.register()
    assert s.engine.store(request(TOKENS, "w"), 1, blocks(1, 3)).ok
    before = fresh_blocks(engine)
    assert s.engine.retrieve(request(TOKENS), 1, FRESH, 0) == TransferOutcome(True, False)
    assert fresh_blocks(engine) == before
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [0, 0, 0]


def test_a_missing_object_fails_the_retrieve_and_releases_the_locks_it_found() -> None:
    s, engine = stored_and_looked_up(readers=2, tokens=TOKENS[: 2 * CS])  # chunk 2 is not locked
    before = fresh_blocks(engine)
    assert s.engine.retrieve(request(TOKENS), 1, FRESH, 0) == TransferOutcome(True, False)
    assert fresh_blocks(engine) == before
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 0]


def test_a_short_block_list_fails_and_releases_nothing() -> None:
    s, engine = stored_and_looked_up()
    before = fresh_blocks(engine)
    assert s.engine.retrieve(request(TOKENS), 1, [FRESH[0][:5]], 0) == TransferOutcome(True, False)
    assert fresh_blocks(engine) == before
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]


def test_an_unknown_instance_releases_that_workers_lookup_locks_once() -> None:
    s = make_server()
    s.register(1, world_size=2)
    s.register(2, world_size=2)
    assert s.engine.store(request(TOKENS, "w0", world_size=2), 1, blocks(1, 3)).ok
    assert s.engine.store(request(TOKENS, "w1", worker_id=1, world_size=2), 2, blocks(1, 3)).ok
    s.engine.lookup(request(TOKENS, worker_id=None, world_size=2, readers=2))
    assert s.engine.query("req") == 3
    for _ in range(2):
        outcome = s.engine.retrieve(request(TOKENS, world_size=2), 99, FRESH, 0)
        assert outcome == TransferOutcome(False, False)
        assert [s.l1.readers(k) for k in s.keys(TOKENS, 0, 2)] == [1, 1, 1]  # once, not per retry
        assert [s.l1.readers(k) for k in s.keys(TOKENS, 1, 2)] == [2, 2, 2]  # the other rank's stay


@pytest.mark.parametrize("skip", [0, BS - 1, BS, CS + BS + 1, 3 * CS])
def test_skipped_tokens_leave_their_whole_blocks_untouched(skip: int) -> None:
    s, engine = stored_and_looked_up()
    for b in FRESH[0]:
        del engine.blocks[(0, b)]
    assert s.engine.retrieve(request(TOKENS), 1, FRESH, skip).ok
    want = [None if i < skip // BS else engine.blocks[(0, b)] for i, b in enumerate(STORED)]
    assert fresh_blocks(engine) == want


def test_a_partial_range_restores_only_its_chunks() -> None:
    s, engine = stored_and_looked_up()
    key = request(TOKENS, start=CS, end=2 * CS)
    assert s.engine.retrieve(key, 1, [[30, 31]], 0).ok
    assert [engine.blocks[(0, 30)], engine.blocks[(0, 31)]] == [engine.blocks[(0, b)] for b in STORED[2:4]]
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 0, 1]


def test_a_failed_copy_still_releases_the_locks_once() -> None:
    s, engine = stored_and_looked_up(readers=2)
    engine.fail_next()
    with pytest.raises(RuntimeError, match="injected"):
        s.engine.retrieve(request(TOKENS), 1, FRESH, 0)
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    [done] = [e for e in s.events.of_type(TransferCompleted) if e.kind is TransferKind.RETRIEVE]
    assert not done.ok


@pytest.mark.parametrize(("start", "worker_id"), [(1, 0), (0, None)], ids=["unaligned", "no_worker"])
def test_a_bad_retrieve_is_refused_before_it_touches_anything(start: int, worker_id: int | None) -> None:
    s, engine = stored_and_looked_up()
    before = fresh_blocks(engine)
    with pytest.raises(RequestError):
        s.engine.retrieve(request(TOKENS, start=start, worker_id=worker_id), 1, FRESH, 0)
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    assert fresh_blocks(engine) == before


def test_free_lookup_locks_releases_the_readers_of_the_hit_once_per_chunk() -> None:
    s, _ = stored_and_looked_up(readers=2)
    assert s.engine.free_lookup_locks(scheduler(end=2 * CS)) == 2
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [0, 0, 2]
    assert s.engine.free_lookup_locks(scheduler(end=2 * CS)) == 0  # each chunk once
    assert s.engine.free_lookup_locks(scheduler(start=CS + 1)) == 1  # chunks fully inside the range
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [0, 0, 0]


def test_free_lookup_locks_consumes_a_finished_lookup_and_leaves_a_running_one() -> None:
    s = make_server()
    s.register()
    assert s.engine.store(request(TOKENS, "w"), 1, blocks(1, 3)).ok
    s.engine.lookup(request(TOKENS, worker_id=None))
    assert s.engine.free_lookup_locks(request(TOKENS, worker_id=None)) == 3  # not polled: consumed first
    assert s.engine.query("req") == 0
    adapter = FakeL2Adapter()
    s = make_server(adapters=[adapter])
    s.register()
    assert s.engine.store(request(TOKENS, "w"), 1, blocks(1, 3)).ok
    s.engine.lookup(request(TOKENS, worker_id=None))
    assert s.engine.free_lookup_locks(request(TOKENS, worker_id=None)) == 0  # still prefetching
    s.loop.run()
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]  # the locks wait for their TTL


def test_free_lookup_locks_without_a_range_or_a_lookup_does_nothing() -> None:
    s, _ = stored_and_looked_up()
    assert s.engine.free_lookup_locks(request(TOKENS, start=2 * CS, end=CS, worker_id=None)) == 0
    assert s.engine.free_lookup_locks(request(TOKENS, "other", worker_id=None)) == 0
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    with pytest.raises(RequestError, match="num_kv_readers"):
        s.engine.free_lookup_locks(request(TOKENS, worker_id=None, readers=0))


def test_end_session_keeps_the_locks_and_forgets_the_lookup() -> None:
    s, _ = stored_and_looked_up()
    s.engine.end_session("req")
    s.engine.end_session("never-seen")  # a no-op
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    assert s.engine.free_lookup_locks(request(TOKENS, worker_id=None)) == 0


def test_clear_keeps_read_locked_objects_unless_forced_and_the_kv_log_hears_removals() -> None:
    s, _ = stored_and_looked_up(tokens=TOKENS[:CS])  # chunk 0 read-locked
    keys = s.keys(TOKENS)
    assert s.engine.clear(force=False) == 2
    assert [s.l1.contains(k) for k in keys] == [True, False, False]
    assert s.engine.clear(force=True) == 1
    assert not any(s.l1.contains(k) for k in keys)
    s.engine.lookup(request(TOKENS, "again", worker_id=None))
    assert s.engine.query("again") == 0
    removed = [r for r in s.kv_events.read(MODEL, 0, 100).events if r.kind == "removed"]
    hashes = [k.chunk_hash for k in keys]
    assert [set(r.block_hashes) for r in removed] == [{hashes[1], hashes[2]}, {hashes[0]}]
