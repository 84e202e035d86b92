from __future__ import annotations

from lmcache.adapters.coordinator.event_forwarder import CoordinatorEventForwarder
from lmcache.adapters.coordinator.l2_events import L2EventReporter
from lmcache.domain.events import L1Read, L2Deleted, L2Loaded, L2Stored
from lmcache.domain.keys import ObjectKey


def _key(i: int) -> ObjectKey:
    return ObjectKey.build(bytes([i]) * 32, "m", 0, 0, "salt")


def test_first_adapter_stores_and_loads_are_recorded_failures_and_others_are_not() -> None:
    reporter = L2EventReporter("inst")
    forward = CoordinatorEventForwarder(reporter)
    forward.publish(L2Stored(0, (_key(1), _key(2), _key(3)), 2, 1, 300, (100, 0, 200)))
    forward.publish(L2Stored(1, (_key(4),), 1, 0, 50, (50,)))  # a later adapter: not the fleet's
    forward.publish(L2Loaded(0, _key(1), True, 100))
    forward.publish(L2Loaded(0, _key(2), False, 0))
    forward.publish(L2Loaded(1, _key(4), True, 50))
    forward.publish(L1Read(3, 1))
    batch = reporter._take_batch()
    assert batch is not None
    assert [(e["type"], e["key"]["chunk_hash_hex"][:2], e["bytes"]) for e in batch["events"]] == [
        ("store", "01", 100),
        ("store", "03", 200),
        ("lookup", "01", 0),
    ]
    assert batch["events"][0]["key"]["cache_salt"] == "salt"


def test_first_adapter_deletes_are_recorded() -> None:
    reporter = L2EventReporter("inst")
    forward = CoordinatorEventForwarder(reporter)
    forward.publish(L2Deleted(0, (_key(1), _key(2))))
    forward.publish(L2Deleted(1, (_key(3),)))  # a later adapter: not the fleet's
    forward.publish(L2Deleted(0, (_key(4), _key(5))))
    forward.publish(L2Deleted(0, ()))
    batch = reporter._take_batch()
    assert batch is not None
    assert [(e["type"], e["key"]["chunk_hash_hex"][:2], e["bytes"]) for e in batch["events"]] == [
        ("delete", "01", 0),
        ("delete", "02", 0),
        ("delete", "04", 0),
        ("delete", "05", 0),
    ]


def test_per_adapter_evictions_reach_the_coordinator_as_deletes() -> None:
    from lmcache.domain.events import L2Evicted

    reporter = L2EventReporter("inst")
    forward = CoordinatorEventForwarder(reporter)
    forward.publish(L2Evicted(0, (_key(1), _key(2)), 4096))
    forward.publish(L2Evicted(1, (_key(3),), 2048))  # a later adapter: not the fleet's
    batch = reporter._take_batch()
    assert batch is not None
    assert [(e["type"], e["key"]["chunk_hash_hex"][:2]) for e in batch["events"]] == [
        ("delete", "01"),
        ("delete", "02"),
    ]
