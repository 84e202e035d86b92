from __future__ import annotations

import json

import pytest

from lmcache.domain.fleet_blend import BlendDirectory, BlendRange, chunk_fingerprint, rolling_fingerprints
from lmcache.domain.fleet_events import L2Event, L2EventType
from lmcache.domain.fleet_state import FleetState
from lmcache.domain.keys import ObjectKey
from tests.fakes.clock import FakeClock


def test_snapshot_round_trips_quotas_and_lru_order_but_not_instances() -> None:
    state = FleetState(FakeClock(), 30)
    state.register("a", "10.0.0.1", 8080)
    state.quotas.set("t", 2.5)
    keys = [ObjectKey(bytes([i, 1]), "m", 1, 0, "t") for i in range(3)]
    state.apply_batch("a", 1, [L2Event(L2EventType.STORE, k, 10 * (i + 1)) for i, k in enumerate(keys)])
    state.apply_batch("a", 2, [L2Event(L2EventType.LOOKUP, keys[0])])
    data = json.loads(json.dumps(state.snapshot()))
    fresh = FleetState(FakeClock(), 30)
    assert fresh.restore(data) == 3
    assert fresh.quotas.get_gb("t") == 2.5
    assert fresh.directory.coldest("t", 3) == [keys[1], keys[2], keys[0]]
    assert fresh.directory.usage("t") == 60
    assert fresh.directory.usage_by_instance()["a"].count == 3
    assert len(fresh.registry) == 0


def test_restore_rejects_unknown_versions_and_bad_rows() -> None:
    with pytest.raises(ValueError):
        FleetState(FakeClock(), 30).restore({"version": 99})
    with pytest.raises(ValueError):
        FleetState(FakeClock(), 30).restore({"version": 1, "keys": [["zz", "m", 1, 0, "", 1, "a"]]})


# cacheblend.md §3.6 vectors (cs = 4)
def test_fingerprint_vectors() -> None:
    assert chunk_fingerprint([1, 2, 3, 4]) == 17976439338477494242
    assert rolling_fingerprints([9, 1, 2, 3, 4, 7], 4) == [
        9101885446244535163,
        17976439338477494242,
        15510159715630902752,
    ]
    assert rolling_fingerprints([1, 2, 3], 4) == []


def test_shifted_match_with_token_verification_and_scope() -> None:
    blend = BlendDirectory(chunk_size=4)
    s = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]
    assert blend.insert([BlendRange("m@", tuple(s), ("h0", "h1", "h2"), 0)]) == 3
    assert blend.insert([BlendRange("m@", tuple(s), ("x0", "x1", "x2"), 0)]) == 0  # first writer wins
    assert blend.insert([BlendRange("m@", tuple(s), ("only-one",), 0)]) == 0  # wrong key count: skipped
    query = [99, 98, 30, 31, 32, 33, 20, 21, 22, 23, 5]
    found = [(m.object_key, m.old_st, m.cur_st) for m in blend.match("m@", query)]
    assert found == [("h2", 8, 2), ("h1", 4, 6)]
    assert blend.match("m@t2", query) == []  # another salt's scope
    assert blend.delete(["h2"]) == 1
    assert [m.object_key for m in blend.match("m@", query)] == ["h1"]


def test_probe_stride_skips_odd_offsets_and_collisions_never_match() -> None:
    blend = BlendDirectory(chunk_size=4, probe_stride=2)
    blend.insert([BlendRange("m@", (10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33), ("a", "b", "c"), 0)])
    query = [99, 98, 30, 31, 32, 33, 20, 21, 22, 23, 5, 10, 11, 12, 13]
    assert [(m.old_st, m.cur_st) for m in blend.match("m@", query)] == [(8, 2), (4, 6)]
    # forge a colliding entry: same fingerprint slot, other tokens -> never returned
    fp = chunk_fingerprint([30, 31, 32, 33])
    blend._index[("m@", fp)][0] = type(blend._index[("m@", fp)][0])("c", (1, 2, 3, 4), 8)
    assert [m.object_key for m in blend.match("m@", query)] == ["b"]
