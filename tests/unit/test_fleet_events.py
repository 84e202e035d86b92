from __future__ import annotations

import pytest

from lmcache.domain.fleet_events import EventSequencer, L2Event, L2EventType
from lmcache.domain.fleet_state import FleetState
from lmcache.domain.keys import ObjectKey
from tests.fakes.clock import FakeClock


def key(n: int, salt: str = "") -> ObjectKey:
    return ObjectKey(bytes([n, n]), "m", 0x01000100, 0, salt)


def store(n: int, nbytes: int = 100, salt: str = "") -> L2Event:
    return L2Event(L2EventType.STORE, key(n, salt), nbytes)


def test_a_repeated_batch_is_a_duplicate() -> None:
    seq = EventSequencer()
    assert seq.accept("a", 1)
    assert not seq.accept("a", 1)
    assert seq.accept("b", 1)  # numbering is per instance
    assert seq.accept("a", 2)
    assert not seq.accept("a", 2)
    assert seq.last_contiguous("a") == 2


def test_out_of_order_batches_are_each_applied_once() -> None:
    seq = EventSequencer()
    assert seq.accept("a", 3)
    assert seq.last_contiguous("a") == 0
    assert seq.accept("a", 1)
    assert seq.accept("a", 2)
    assert seq.last_contiguous("a") == 3
    assert not seq.accept("a", 3)
    assert not seq.accept("a", 2)


def test_a_long_gap_moves_the_floor_and_reset_restarts_numbering() -> None:
    seq = EventSequencer(window=10)
    assert seq.accept("a", 1)
    assert seq.accept("a", 50)
    assert not seq.accept("a", 20)  # lost for good, below the new floor
    seq.reset("a")
    assert seq.accept("a", 1)
    with pytest.raises(ValueError):
        seq.accept("a", 0)


def test_duplicate_and_out_of_order_batches_never_double_count_usage() -> None:
    state = FleetState(FakeClock(), 30)
    first = [store(1, 100), store(2, 50)]
    second = [L2Event(L2EventType.DELETE, key(1)), store(3, 25)]
    assert state.apply_batch("a", 2, second).recorded == 2  # arrives first: delete of an unknown key
    assert state.apply_batch("a", 1, first).recorded == 2
    assert state.apply_batch("a", 1, first).duplicate
    assert state.apply_batch("a", 2, second).duplicate
    assert state.directory.usage("") == 175  # 100 + 50 + 25: the late delete came before its store
    assert state.apply_batch("a", 3, [L2Event(L2EventType.DELETE, key(1))]).recorded == 1
    assert state.directory.usage("") == 75


def test_store_lookup_delete_semantics_and_lru_order() -> None:
    state = FleetState(FakeClock(), 30)
    state.apply_batch("a", 1, [store(1, 10, "t"), store(2, 20, "t"), store(3, 30, "t")])
    assert state.directory.coldest("t", 3) == [key(1, "t"), key(2, "t"), key(3, "t")]
    state.apply_batch("a", 2, [L2Event(L2EventType.LOOKUP, key(1, "t")), L2Event(L2EventType.LOOKUP, key(9))])
    assert state.directory.coldest("t", 2) == [key(2, "t"), key(3, "t")]
    state.apply_batch("b", 1, [store(2, 5, "t")])  # re-store: new size, moves to head, new owner
    assert state.directory.usage("t") == 45
    assert state.directory.usage_by_instance()["b"].nbytes == 5
    state.apply_batch("b", 2, [L2Event(L2EventType.DELETE, key(2, "t"))])  # subtracts the stored size
    assert state.directory.usage("t") == 40
    assert len(state.directory) == 2


def test_registration_restarts_the_instances_numbering() -> None:
    state = FleetState(FakeClock(), 30)
    assert not state.apply_batch("a", 1, [store(1)]).duplicate
    state.register("a", "10.0.0.1", 8080)  # a restarted server numbers from 1 again
    assert not state.apply_batch("a", 1, [store(2)]).duplicate
    assert state.directory.usage("") == 200
