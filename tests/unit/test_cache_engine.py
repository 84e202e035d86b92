"""CacheEngine lookup and store (wire-protocol.md §5.2, §5.3, §5.5) over fake ports and the real domain.

Assertions are on outcomes: bytes in L1 and in L2, hit counts, lock counts, KV-event records and
telemetry events. Retrieve, sessions and clear are in test_cache_engine_retrieve.py.
"""

from __future__ import annotations

import asyncio

import pytest

from lmcache.domain.cache_engine import RequestError, TransferOutcome
from lmcache.domain.events import AllocationFailed, L1WriteAborted, LookupPerformed, TransferCompleted
from tests.fakes.l2_adapter import FakeL2Adapter
from tests.unit._engine import CS, MODEL, NB, NULL, OBJECT_BYTES, blocks, make_server, request

# wire-protocol.md §6.1: chunk size 4, tokens 1..9 (token 9 is a partial chunk and is dropped).
VECTOR = [
    bytes.fromhex("6309ed506b8721905753f5c73c070bb21c3aafbd9b474b1e231f41368b71123c"),
    bytes.fromhex("98efc76eafb06cfe774c31ff151f300b61a614c27982a211bb8cdbd83a8c0e19"),
]
TOKENS = list(range(100, 100 + 3 * CS))  # three full chunks


def test_a_lookup_without_a_registered_layout_reads_zero() -> None:
    s = make_server()
    s.engine.lookup(request(TOKENS, worker_id=None))
    assert s.engine.query("req") == 0
    [looked] = s.events.of_type(LookupPerformed)
    assert looked.chunk_hashes == ()


def test_a_lookup_hashes_the_full_chunks_with_the_wire_chain() -> None:
    s = make_server()
    s.register()
    s.engine.lookup(request(list(range(1, 10)), worker_id=None))
    [looked] = s.events.of_type(LookupPerformed)
    assert list(looked.chunk_hashes) == VECTOR
    assert (looked.model_name, looked.chunk_size, looked.seq_len) == (MODEL, CS, 9)
    assert s.engine.query("req") == 0  # nothing stored


def test_a_lookup_needs_a_reader() -> None:
    s = make_server()
    s.register()
    with pytest.raises(RequestError, match="num_kv_readers"):
        s.engine.lookup(request(TOKENS, worker_id=None, readers=0))


def test_a_stored_prefix_is_found_locked_per_reader_and_handed_over_once() -> None:
    s = make_server()
    s.register()
    assert s.engine.store(request(TOKENS, rid="w"), 1, blocks(1, 3)) == TransferOutcome(True, True)
    s.engine.lookup(request([*TOKENS, 7, 7], rid="r", worker_id=None, readers=2))  # a partial chunk more
    assert s.engine.query("r") == 3  # committed before the store replied
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [2, 2, 2]
    assert s.engine.query("r") == 0  # handed over once
    assert s.engine.query("never-looked-up") == 0


def test_a_scheduler_lookup_needs_every_rank_and_keeps_locks_only_on_the_common_prefix() -> None:
    s = make_server()
    s.register(1, world_size=2)
    s.register(2, world_size=2)
    tokens = list(range(4 * CS))
    rank0, rank1 = request(tokens, "w0", world_size=2), request(tokens, "w1", worker_id=1, world_size=2)
    assert s.engine.store(rank0, 1, blocks(1, 4)).ok
    assert s.engine.store(rank1, 2, [[1, 2, 3, 4, NULL, NULL, 7, 8]]).ok  # rank 1 has no chunk 2
    s.engine.lookup(request(tokens, "r", worker_id=None, world_size=2))
    assert s.engine.query("r") == 2
    assert [s.l1.readers(k) for k in s.keys(tokens, 0, 2)] == [1, 1, 0, 0]
    assert [s.l1.readers(k) for k in s.keys(tokens, 1, 2)] == [1, 1, 0, 0]
    assert s.l1.contains(s.keys(tokens, 1, 2)[3]) and not s.l1.contains(s.keys(tokens, 1, 2)[2])


def test_a_lookup_loads_the_l2_part_of_the_prefix_into_l1_before_it_answers() -> None:
    adapter = FakeL2Adapter()
    s = make_server(adapters=[adapter])
    s.register()
    keys = s.keys(TOKENS)
    assert s.engine.store(request(TOKENS, "w"), 1, blocks(1, 3)).ok
    stored = [s.object(k) for k in keys]
    assert asyncio.run(s.engine.store_controller.drain()) == 3
    assert [adapter.objects[k] for k in keys] == stored
    assert s.engine.clear(force=True) == 3
    s.engine.lookup(request(TOKENS, "r", worker_id=None))
    assert s.engine.query("r") is None  # the prefetch waits for the storage loop
    assert s.engine.wait("r", 0.0) is None
    s.loop.run()
    assert s.engine.wait("r", 1.0) == 3
    assert [s.object(k) for k in keys] == stored
    assert [s.l1.readers(k) for k in keys] == [1, 1, 1]


def test_store_of_an_unknown_instance_fails_and_stores_nothing() -> None:
    s = make_server()
    assert s.engine.store(request(TOKENS), 99, blocks(1, 3)) == TransferOutcome(False, False)
    assert s.l1.object_count == 0
    [done] = s.events.of_type(TransferCompleted)
    assert (done.ok, done.tokens, done.nbytes) == (False, 0, 0)


@pytest.mark.parametrize(
    ("start", "end", "worker_id"),
    [(1, 2 * CS, 0), (0, 3 * CS + 1, 0), (2 * CS, CS, 0), (-CS, CS, 0), (0, CS, None)],
    ids=["unaligned", "past_the_tokens", "backwards", "negative", "no_worker"],
)
def test_a_bad_range_is_refused_and_nothing_is_reserved(start: int, end: int, worker_id: int | None) -> None:
    s = make_server()
    s.register()
    with pytest.raises(RequestError):
        s.engine.store(request(TOKENS, start=start, end=end, worker_id=worker_id), 1, blocks(1, 3))
    assert s.l1.object_count == 0
    assert [e.ok for e in s.events.of_type(TransferCompleted)] == [False]


@pytest.mark.parametrize(
    "ids", [[[1, 2, 3, 4, 5, 6], [1, 2]], [[1, 2, 3, 4, 5, NB]], [[1, 2, -1, 4, 5, 6]]], ids=str
)
def test_block_lists_that_do_not_fit_the_layout_are_refused(ids: list[list[int]]) -> None:
    s = make_server()
    s.register()
    with pytest.raises(RequestError):
        s.engine.store(request(TOKENS), 1, ids)
    assert s.l1.object_count == 0


def test_a_short_block_list_stores_nothing() -> None:
    s = make_server()
    s.register()
    assert s.engine.store(request(TOKENS), 1, [[1, 2, 3, 4, 5]]) == TransferOutcome(True, False)
    assert s.l1.object_count == 0


def test_store_copies_the_chunks_blocks_into_l1() -> None:
    s = make_server()
    engine = s.register()
    assert s.engine.store(request(TOKENS), 1, [[9, 3, 40, 41, 2, 1]]).ok
    pairs = [(9, 3), (40, 41), (2, 1)]
    want = [engine.blocks[(0, a)] + engine.blocks[(0, b)] for a, b in pairs]
    assert [s.object(k) for k in s.keys(TOKENS)] == want
    [done] = s.events.of_type(TransferCompleted)
    assert (done.ok, done.tokens, done.nbytes) == (True, 3 * CS, 3 * OBJECT_BYTES)


def test_chunks_whose_blocks_are_all_null_are_skipped() -> None:
    s = make_server()
    s.register()
    assert s.engine.store(request(TOKENS), 1, [[NULL, 5, NULL, NULL, 9, 10]]).ok
    assert [s.l1.contains(k) for k in s.keys(TOKENS)] == [True, False, True]  # one null block is not all


def test_a_second_store_of_the_same_range_copies_nothing_new() -> None:
    s = make_server()
    engine = s.register()
    assert s.engine.store(request(TOKENS), 1, blocks(1, 3)).ok
    first = [s.object(k) for k in s.keys(TOKENS)]
    engine.blocks[(0, 1)] = bytes(len(engine.blocks[(0, 1)]))  # the engine's copy changed since
    assert s.engine.store(request(TOKENS), 1, blocks(1, 3)) == TransferOutcome(True, True)
    assert [s.object(k) for k in s.keys(TOKENS)] == first
    assert [e.tokens for e in s.events.of_type(TransferCompleted)] == [3 * CS, 0]


def test_a_failed_copy_leaves_nothing_visible_or_reserved() -> None:
    s = make_server()
    engine = s.register()
    engine.fail_next()
    with pytest.raises(RuntimeError, match="injected"):
        s.engine.store(request(TOKENS), 1, blocks(1, 3))
    assert s.l1.object_count == 0 and s.l1.stats().used_bytes == 0
    [aborted] = s.events.of_type(L1WriteAborted)
    assert set(aborted.keys) == set(s.keys(TOKENS))
    assert [e.ok for e in s.events.of_type(TransferCompleted)] == [False]
    s.engine.lookup(request(TOKENS, "r", worker_id=None))
    assert s.engine.query("r") == 0
    assert s.engine.store(request(TOKENS), 1, blocks(1, 3)).ok  # nothing was left write-locked
    assert all(s.l1.contains(k) for k in s.keys(TOKENS))


def test_stores_of_worker_0_bind_chunk_hashes_to_tokens_in_the_kv_event_log() -> None:
    s = make_server()
    s.register(1, world_size=2)
    s.register(2, world_size=2)
    digests = [k.chunk_hash for k in s.keys(TOKENS)]
    assert s.engine.store(request(TOKENS, start=CS, world_size=2), 1, blocks(1, 2)).ok
    assert s.engine.store(request(TOKENS, worker_id=1, world_size=2), 2, blocks(1, 3)).ok
    records = s.kv_events.read(MODEL, 0, 100).events
    assert [(r.kind, r.block_hashes, r.parent_block_hash) for r in records] == [
        ("stored", [digests[1]], digests[0]),
        ("stored", [digests[2]], digests[1]),
    ]
    assert [list(r.token_ids) for r in records] == [TOKENS[CS : 2 * CS], TOKENS[2 * CS :]]


def test_committed_objects_go_to_the_l2_cascade() -> None:
    adapter = FakeL2Adapter()
    s = make_server(adapters=[adapter])
    s.register()
    assert s.engine.store(request(TOKENS), 1, blocks(1, 3)).ok
    asyncio.run(s.engine.store_controller.drain())
    assert {k: adapter.objects[k] for k in s.keys(TOKENS)} == {k: s.object(k) for k in s.keys(TOKENS)}


def test_store_refreshes_the_instance_liveness() -> None:
    s = make_server()
    s.register()
    s.clock.advance(50)
    assert s.engine.store(request(TOKENS), 1, blocks(1, 3)).ok
    worker = s.engine.workers.get(1, touch=False)
    assert worker is not None and worker.last_seen == s.clock.now


def test_a_full_l1_skips_what_does_not_fit_and_evicts_on_demand_once_it_may() -> None:
    s = make_server(slots=2)
    s.register()
    first, second = TOKENS[: 2 * CS], list(range(500, 500 + 2 * CS))
    assert s.engine.store(request(first, "a"), 1, blocks(1, 2)).ok
    s.engine.lookup(request(first, "r", worker_id=None))
    assert s.engine.query("r") == 2  # both objects read-locked: nothing can be evicted
    assert s.engine.store(request(second, "b"), 1, blocks(5, 2)) == TransferOutcome(True, True)
    assert not any(s.l1.contains(k) for k in s.keys(second))
    assert len(s.events.of_type(AllocationFailed)) == 2
    assert s.engine.free_lookup_locks(request(first, "r", worker_id=None)) == 2
    assert s.engine.store(request(second, "b"), 1, blocks(5, 2)).ok
    assert all(s.l1.contains(k) for k in s.keys(second))
    assert not any(s.l1.contains(k) for k in s.keys(first))
