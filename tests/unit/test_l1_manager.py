from __future__ import annotations

from lmcache.domain.events import EvictionReason, L1Removed, L1WriteAborted, L1WriteCommitted
from lmcache.domain.l1_index import ClearReport, LockCounts

from ._storage import ALIGN, key, make_l1, put


def test_two_phase_write_is_invisible_until_finish() -> None:
    l1, _, events = make_l1()
    k = key(1)
    extent = l1.reserve([k], 100)[0]
    assert extent is not None and extent.size == 2 * ALIGN
    assert not l1.contains(k)
    assert l1.lock_read([k]) == [False]
    assert l1.reserve([k], 100) == [None]  # being written: skipped
    assert l1.finish([k]) == [True]
    assert l1.contains(k) and l1.extent(k) == extent
    assert l1.reserve([k], 100) == [None]  # present: skipped
    assert events.of_type(L1WriteCommitted)[0].keys == (k,)


def test_abort_frees_and_is_never_visible() -> None:
    l1, _, events = make_l1(slots=2)
    k = key(1)
    l1.reserve([k], ALIGN)
    assert l1.abort([k]) == 1
    assert l1.finish([k]) == [False]
    assert not l1.contains(k)
    assert l1.stats().used_bytes == 0
    assert events.of_type(L1WriteAborted)[0].expired is False


def test_expired_write_reservation_is_reclaimed_and_never_committed() -> None:
    l1, clock, _ = make_l1(write_ttl=600)
    a, b = key(1), key(2)
    l1.reserve([a, b], ALIGN)
    clock.advance(599)
    assert l1.reap_expired() == []
    clock.advance(1)
    assert l1.reap_expired() == [a, b]
    assert l1.finish([a]) == [False]
    assert not l1.contains(a)
    assert l1.stats().used_bytes == 0


def test_expired_write_is_lazily_reclaimed_by_a_new_reserve() -> None:
    l1, clock, _ = make_l1()
    k = key(1)
    l1.reserve([k], ALIGN)
    clock.advance(601)
    assert l1.finish([k]) == [False]
    assert l1.reserve([k], ALIGN)[0] is not None
    assert l1.object_count == 1


def test_read_locks_count_readers_and_expire_after_ttl() -> None:
    l1, clock, _ = make_l1(read_ttl=300)
    k = key(1)
    put(l1, k)
    assert l1.lock_read([k], n=2) == [True]
    assert l1.readers(k) == 2
    l1.unlock_read([k])
    assert l1.readers(k) == 1
    assert l1.delete([k]) == 0  # locked: not deletable
    clock.advance(300)
    assert l1.readers(k) == 0  # expired
    l1.reap_expired()
    assert l1.delete([k]) == 1


def test_new_lock_refreshes_the_read_deadline() -> None:
    l1, clock, _ = make_l1(read_ttl=300)
    k = key(1)
    put(l1, k)
    l1.lock_read([k])
    clock.advance(200)
    l1.lock_read([k])
    clock.advance(200)
    l1.reap_expired()
    assert l1.readers(k) == 2


def test_unlock_never_goes_below_zero() -> None:
    l1, _, _ = make_l1()
    k = key(1)
    put(l1, k)
    l1.unlock_read([k], n=5)
    assert l1.readers(k) == 0
    assert l1.lock_read([k]) == [True] and l1.readers(k) == 1


def test_lock_prefix_stops_at_first_miss() -> None:
    l1, _, _ = make_l1()
    put(l1, key(1), key(2), key(4))
    assert l1.lock_prefix([key(1), key(2), key(3), key(4)], n=1) == 2
    assert l1.readers(key(4)) == 0
    assert l1.prefix_len([key(1), key(2), key(3)]) == 2


def test_finish_with_read_locks_and_temporary_leaves_after_last_reader() -> None:
    l1, _, events = make_l1()
    k = key(1)
    l1.reserve([k], ALIGN)
    l1.finish([k], read_locks=2, temporary=True)
    l1.unlock_read([k])
    assert l1.contains(k)
    l1.unlock_read([k])
    assert not l1.contains(k)
    assert events.of_type(L1Removed)[-1].reason == EvictionReason.TEMPORARY


def test_expired_read_lock_of_temporary_object_frees_it() -> None:
    l1, clock, _ = make_l1()
    k = key(1)
    l1.reserve([k], ALIGN)
    l1.finish([k], read_locks=1, temporary=True)
    clock.advance(301)
    l1.reap_expired()
    assert not l1.contains(k)


def test_mark_temporary_drops_unlocked_now_and_locked_later() -> None:
    l1, _, _ = make_l1()
    a, b = key(1), key(2)
    put(l1, a, b)
    l1.lock_read([b])
    assert l1.mark_temporary([a, b], EvictionReason.STORED_TO_L2) == 1
    assert not l1.contains(a) and l1.contains(b)
    l1.unlock_read([b])
    assert not l1.contains(b)


def test_clear_normal_keeps_locked_and_live_reservations() -> None:
    l1, clock, _ = make_l1()
    ready, locked, writing, stale = key(1), key(2), key(3), key(4)
    put(l1, ready, locked)
    l1.lock_read([locked])
    l1.reserve([stale], ALIGN)
    clock.advance(601)
    l1.lock_read([locked])  # refresh so it is still locked
    l1.reserve([writing], ALIGN)
    assert l1.clear_report(force=False) == ClearReport(2, 1, 1, 0, 0)  # ready + the expired reservation
    assert l1.contains(locked) and l1.write_extent(writing) is not None
    # force: the read-locked object goes (retired); the live write stays and lands as a later store
    assert l1.clear_report(force=True) == ClearReport(1, 0, 1, 1, ALIGN)
    assert not l1.contains(locked) and l1.object_count == 1
    assert l1.stats().used_bytes == 2 * ALIGN  # the reader and the writer still use their memory
    assert l1.finish([writing]) == [True] and l1.contains(writing)
    l1.unlock_read([locked], n=2)
    assert l1.stats().used_bytes == ALIGN and l1.retired_count == 0


def test_forced_removal_never_hands_memory_in_use_to_another_object() -> None:
    l1, _, events = make_l1(slots=2)
    read, other = key(1), key(3)
    put(l1, read)
    l1.lock_read([read])
    mine = l1.extent(read)
    assert l1.clear(force=True) == 1
    assert events.of_type(L1Removed)[-1].keys == (read,)
    assert not l1.contains(read) and l1.lock_read([read]) == [False]
    assert l1.readers(read) == 1 and l1.extent(read) is None  # its reader fails, and must still let go
    taken = l1.reserve([other], ALIGN)[0]
    assert taken is not None and taken != mine  # the reader's extent is not handed out...
    assert l1.reserve([key(4)], ALIGN) == [None]  # ...not even when nothing else is left
    l1.unlock_read([read])
    assert l1.retired_count == 0 and l1.reserve([key(4)], ALIGN)[0] == mine  # ...until it let go


def test_a_store_after_a_forced_clear_lands_while_old_readers_still_hold_the_key() -> None:
    l1, _, _ = make_l1(slots=4)
    k = key(1)
    put(l1, k)
    old = l1.extent(k)
    l1.lock_read([k])  # reader A, from before the clear
    assert l1.clear(force=True) == 1
    new = l1.reserve([k], ALIGN)[0]  # the same key stored again: it lands, in other memory
    assert new is not None and new != old
    assert l1.finish([k]) == [True] and l1.contains(k) and l1.extent(k) == new
    assert l1.readers(k) == 1  # A still holds the key
    assert l1.lock_read([k]) == [True] and l1.readers(k) == 2  # reader B, of the new object
    # Nothing of the key may go while a reader is left: neither eviction nor a normal clear takes it.
    assert l1.evict(10 * ALIGN) == (0, 0) and l1.clear(force=False) == 0
    l1.unlock_read([k])  # whoever of the two let go first, the old memory stays for the other
    assert l1.stats().used_bytes == 2 * ALIGN and l1.retired_count == 1
    l1.unlock_read([k])
    assert l1.retired_count == 0 and l1.stats().used_bytes == ALIGN
    assert l1.contains(k) and l1.extent(k) == new and l1.evict(ALIGN) == (1, ALIGN)


def test_a_successor_cleared_by_force_again_joins_the_retired_memory() -> None:
    l1, clock, _ = make_l1(slots=4, read_ttl=300)
    k = key(1)
    put(l1, k)
    l1.lock_read([k])
    l1.clear(force=True)
    put(l1, k)  # the successor, not locked itself: an old reader may still copy out of it
    assert l1.clear_report(force=True) == ClearReport(1, 0, 0, 1, 2 * ALIGN)
    assert l1.stats().used_bytes == 2 * ALIGN and not l1.contains(k)
    put(l1, k)  # and a third store of the key lands too
    assert l1.contains(k) and l1.stats().used_bytes == 3 * ALIGN
    clock.advance(300)
    l1.reap_expired()  # the reader never came back: its lock's TTL frees both old extents
    assert l1.retired_count == 0 and l1.stats().used_bytes == ALIGN and l1.contains(k)


def test_temporary_successor_leaves_after_the_last_reader_of_the_key() -> None:
    l1, _, _ = make_l1(slots=4)
    k = key(1)
    put(l1, k)
    l1.lock_read([k])
    l1.clear(force=True)
    l1.reserve([k], ALIGN)
    assert l1.finish([k], read_locks=1, temporary=True) == [True]  # a prefetched successor
    l1.unlock_read([k])
    assert l1.contains(k)  # one lock on the key left: it stays
    l1.unlock_read([k])
    assert not l1.contains(k) and l1.stats().used_bytes == 0


def test_forced_delete_retires_read_objects_until_their_ttl_and_leaves_live_writes() -> None:
    l1, clock, _ = make_l1(slots=4, read_ttl=300, write_ttl=600)
    read, written, idle = key(1), key(2), key(3)
    put(l1, read, idle)
    l1.lock_read([read])
    l1.reserve([written], ALIGN)
    assert l1.delete([read, written, idle], force=True) == 2
    assert l1.retired_count == 1 and l1.stats().used_bytes == 2 * ALIGN  # the idle one went at once
    assert l1.finish([written]) == [True]  # the write in flight lands
    clock.advance(299)
    l1.reap_expired()
    assert l1.retired_count == 1
    clock.advance(1)
    l1.reap_expired()  # a reader that never came back: its lock's TTL frees the memory
    assert l1.retired_count == 0 and l1.stats().used_bytes == ALIGN


def test_usage_by_salt_tracks_reservations_and_objects() -> None:
    l1, _, _ = make_l1()
    put(l1, key(1, "a"), key(2, "a"), key(3, "b"))
    l1.reserve([key(4, "b")], ALIGN)
    assert l1.usage_by_salt() == {"a": 2 * ALIGN, "b": 2 * ALIGN}
    l1.delete([key(1, "a"), key(2, "a")])
    assert l1.usage_by_salt() == {"b": 2 * ALIGN}


def test_one_removal_over_interleaved_salts_keeps_each_salts_bytes() -> None:
    l1, _, _ = make_l1()
    keys = [key(i, salt) for i, salt in enumerate(["a", "b", "a", "", "a", "b", "c"])]
    put(l1, *keys)
    l1.delete([keys[0], keys[1], keys[2], keys[3], keys[5]])  # runs a, b, a, "", b: some salts emptied
    assert l1.usage_by_salt() == {"a": ALIGN, "c": ALIGN}
    l1.delete([keys[4], keys[6]])
    assert l1.usage_by_salt() == {}


def test_deadline_heap_stays_bounded_under_many_refreshes() -> None:
    l1, _, _ = make_l1()
    k = key(1)
    put(l1, k)
    for _ in range(20_000):
        l1.lock_read([k])
        l1.unlock_read([k])
    assert len(l1._deadlines) <= 8192


def test_delete_of_a_key_named_twice_removes_it_once() -> None:
    l1, _, _ = make_l1()
    put(l1, key(1))
    put(l1, key(2))
    assert l1.delete([key(1), key(1), key(2)]) == 2
    assert not l1.contains(key(1)) and not l1.contains(key(2))


def test_a_batch_is_reserved_back_to_back_and_a_key_named_twice_once() -> None:
    l1, _, _ = make_l1(slots=16)
    keys = [key(i) for i in range(4)]
    extents = l1.reserve([*keys, keys[1]], ALIGN)
    assert extents[4] is None  # the repeat of keys[1] in the same batch
    assert [e.offset for e in extents[:4] if e is not None] == [0, ALIGN, 2 * ALIGN, 3 * ALIGN]
    assert l1.stats().used_bytes == 4 * ALIGN and l1.object_count == 4
    assert l1.finish(keys) == [True] * 4


def test_a_batch_that_fits_no_single_run_is_placed_piece_by_piece_with_eviction() -> None:
    l1, _, events = make_l1(slots=4)
    put(l1, *[key(i) for i in range(4)])
    l1.delete([key(1), key(3)])  # two holes, no run of two
    extents = l1.reserve([key(10), key(11), key(12)], ALIGN)  # the third evicts the coldest object
    assert all(e is not None for e in extents)
    assert sorted(e.offset for e in extents if e is not None) == [0, ALIGN, 3 * ALIGN]
    assert [k for e in events.of_type(L1Removed) for k in e.keys][-1] == key(0)


def test_lock_counts_follow_every_lock_and_release() -> None:
    l1, clock, _ = make_l1(read_ttl=300, write_ttl=600)
    a, b, c = key(1), key(2), key(3)
    assert l1.lock_counts() == LockCounts(0, 0, 0)
    put(l1, a)
    put(l1, b)
    l1.reserve([c], ALIGN)
    assert l1.lock_counts() == LockCounts(0, 0, 1)
    l1.lock_read([a, b])
    l1.lock_read([a], 2)  # refreshes a's deadline: its older heap item is stale and not counted twice
    assert l1.lock_counts() == LockCounts(2, 4, 1)
    l1.unlock_read([b])
    l1.finish([c])
    assert l1.lock_counts() == LockCounts(1, 3, 0)
    l1.delete([a], force=True)  # retired while read: its readers still hold locks
    assert l1.lock_counts() == LockCounts(1, 3, 0)
    clock.advance(301)  # expired locks are not held, even before the reaper ran
    assert l1.lock_counts() == LockCounts(0, 0, 0)


def test_compacting_the_deadline_heap_keeps_every_live_lock() -> None:
    l1, clock, _ = make_l1(slots=64, write_ttl=600, read_ttl=300)
    writing, reading = key(1), key(2)
    l1.reserve([writing], ALIGN)  # a write that never finishes
    put(l1, reading)
    assert l1.lock_read([reading]) == [True]
    for n in range(10_000):  # committed writes: each pushes an item that is stale at once
        k = key(100 + n % 40)
        if l1.reserve([k], ALIGN)[0] is not None:
            l1.finish([k])
        else:
            l1.delete([k])
    assert len(l1._deadlines) <= 8192  # compacted along the way...
    assert l1.lock_counts() == LockCounts(1, 1, 1)  # ... and both live locks are still there
    clock.advance(601)
    assert l1.reap_expired() == [writing]
    assert l1.lock_counts() == LockCounts(0, 0, 0)
