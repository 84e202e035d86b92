"""The scheduler half's per-request bookkeeping: chunk alignment, the last token, locks and stores."""

from __future__ import annotations

from lmcache.adapters.vllm.tracking import RequestTracker, chunk_floor, tokens_to_load
from lmcache.adapters.vllm.transfer_ops import ParallelStrategy

CHUNK, BLOCK = 256, 32


def _tracker(n: int = 600, prompt: int | None = None) -> RequestTracker:
    tokens = list(range(n))
    return RequestTracker("r", tokens, n if prompt is None else prompt)


def test_chunk_floor() -> None:
    assert [chunk_floor(n, CHUNK) for n in (0, 255, 256, 600, 768)] == [0, 0, 256, 512, 768]


def test_the_last_token_is_never_offered() -> None:
    assert tokens_to_load(512, 0, 600) == 512
    assert tokens_to_load(512, 0, 512) == 511
    assert tokens_to_load(512, 320, 512) == 191
    assert tokens_to_load(512, 512, 600) == 0
    assert tokens_to_load(0, 0, 600) == 0
    assert tokens_to_load(256, 320, 600) == 0


def test_lookup_covers_full_chunks_only() -> None:
    assert _tracker(600).lookup_end(CHUNK) == 512
    assert _tracker(255).lookup_end(CHUNK) == 0


def test_a_hit_is_loaded_from_vllms_own_hit_rounded_down_to_a_chunk() -> None:
    tracker = _tracker()
    assert tracker.record_hit(512, 320) == 192
    tracker.set_blocks(range(100, 119))
    outcome = tracker.on_alloc(192, CHUNK, BLOCK)
    load = outcome.load
    assert load is not None
    assert (load.start, load.end, load.skip_first_n_tokens) == (256, 512, 64)
    assert load.block_ids == list(range(108, 116))
    assert load.token_ids == list(range(512))
    assert outcome.free_end == 256  # the first chunk is vLLM's: its locks go now, the retrieve frees the rest
    assert tracker.take_locked_end() == 0
    assert tracker.take_load() is load
    assert tracker.take_load() is None


def test_no_load_frees_every_locked_chunk_once() -> None:
    tracker = _tracker()
    tracker.record_hit(512, 0)
    tracker.set_blocks(range(19))
    outcome = tracker.on_alloc(0, CHUNK, BLOCK)
    assert (outcome.free_end, outcome.load) == (512, None)
    assert tracker.on_alloc(0, CHUNK, BLOCK).free_end == 0  # a second call frees nothing more
    assert tracker.take_locked_end() == 0


def test_a_request_that_never_got_blocks_still_holds_its_locks() -> None:
    tracker = _tracker()
    tracker.record_hit(512, 0)
    assert tracker.take_locked_end() == 512
    assert tracker.take_locked_end() == 0


def test_stores_follow_computed_prompt_chunks_only() -> None:
    tracker = _tracker(700)
    tracker.record_hit(0, 0)
    tracker.set_blocks(range(22))
    assert tracker.next_store(200, CHUNK, BLOCK, save_decode_cache=False) is None
    first = tracker.next_store(300, CHUNK, BLOCK, save_decode_cache=False)
    assert first is not None
    assert (first.start, first.end, first.block_ids) == (0, 256, list(range(8)))
    second = tracker.next_store(700, CHUNK, BLOCK, save_decode_cache=False)
    assert second is not None
    assert (second.start, second.end, second.block_ids) == (256, 512, list(range(8, 16)))
    assert tracker.next_store(700, CHUNK, BLOCK, save_decode_cache=False) is None


def test_decode_tokens_are_stored_only_when_configured() -> None:
    prompt_only, with_decode = _tracker(800, prompt=500), _tracker(800, prompt=500)
    for tracker in (prompt_only, with_decode):
        tracker.record_hit(0, 0)
        tracker.set_blocks(range(25))
    stored = prompt_only.next_store(800, CHUNK, BLOCK, save_decode_cache=False)
    assert stored is not None
    assert stored.end == 256
    stored = with_decode.next_store(800, CHUNK, BLOCK, save_decode_cache=True)
    assert stored is not None
    assert stored.end == 768


def test_stores_never_outrun_known_tokens_or_blocks() -> None:
    tracker = _tracker(600)
    tracker.set_blocks(range(10))  # only 320 tokens of blocks so far
    store = tracker.next_store(600, CHUNK, BLOCK, save_decode_cache=True)
    assert store is not None
    assert store.end == 256
    assert tracker.next_store(10_000, CHUNK, BLOCK, save_decode_cache=True) is None


def test_a_hit_counts_as_stored() -> None:
    tracker = _tracker(800)
    tracker.record_hit(512, 0)
    tracker.set_blocks(range(25))
    store = tracker.next_store(800, CHUNK, BLOCK, save_decode_cache=False)
    assert store is not None
    assert (store.start, store.end) == (512, 768)


def test_failed_loads_rewind_what_counts_as_stored() -> None:
    tracker = _tracker(800)
    tracker.record_hit(768, 0)
    tracker.set_blocks(range(100, 125))
    assert tracker.forget_blocks_from({999}, CHUNK, BLOCK) is False
    assert tracker.forget_blocks_from({110, 120}, CHUNK, BLOCK) is True
    assert tracker.stored_end == 256  # block 110 is the 11th block: inside the second chunk


def test_mla_strategy_reads_per_tp_rank_and_writes_once() -> None:
    plain = ParallelStrategy.build(False, 4, 3, 4, 1)
    assert (plain.kv_world_size, plain.kv_worker_id, plain.num_kv_readers, plain.is_kv_writer) == (
        4,
        3,
        1,
        True,
    )
    mla = ParallelStrategy.build(True, 4, 3, 2, 2)
    assert (mla.kv_world_size, mla.kv_worker_id, mla.num_kv_readers, mla.is_kv_writer) == (2, 1, 2, False)
    assert ParallelStrategy.build(True, 4, 2, 2, 2).is_kv_writer
