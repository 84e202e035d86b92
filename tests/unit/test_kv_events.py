"""The KV-event log's memory: compact token storage and a byte bound beside the record bound."""

from __future__ import annotations

import tracemalloc

from lmcache.domain.kv_events import KVEventLog

CHUNK = 256


def _store(log: KVEventLog, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        tokens = [100_000 + i * CHUNK + t for t in range(CHUNK)]  # distinct ids: no small-int sharing
        log.stored("m", [i.to_bytes(32, "big")], [None], [tokens])


def test_a_record_of_a_256_token_chunk_holds_about_a_kilobyte() -> None:
    log = KVEventLog(100_000, 1, max_bytes=1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _store(log, 2000)
        per_record = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    # A list of 256 Python ints costs ~9 KB; one array of 4-byte ids ~1 KB plus the record's objects.
    assert per_record < 2_000, per_record
    assert abs(log.nbytes / 2000 - per_record) < 700  # the estimate the byte bound uses is honest


def test_the_log_is_bounded_by_bytes_as_well_as_records() -> None:
    log = KVEventLog(32768, 1, max_bytes=200_000)
    _store(log, 1000)
    assert log.nbytes <= 200_000 and 0 < len(log) < 1000
    first_kept = 1000 - len(log) + 1
    batch = log.read("m", 0, 10)
    assert batch.lost and batch.events[0].seq == first_kept
    assert log.next_seq == 1001


def test_the_record_bound_still_applies_and_tokens_round_trip() -> None:
    log = KVEventLog(10, 1)
    _store(log, 25)
    assert len(log) == 10
    big = [0, 1, (1 << 32) - 1]
    log.stored("m", [b"\x01" * 32], [b"\x02" * 32], [big])
    record = log.read("m", 25, 5).events[0]
    assert record.token_ids.tolist() == big and record.parent_block_hash == b"\x02" * 32
    log.stored("m", [b"\x03" * 32], [None], [[1 << 40]])  # outside 32 bits: stored wider, not refused
    assert log.read("m", 26, 5).events[0].token_ids.tolist() == [1 << 40]
