"""L2 routes against real servers where the adapter matters: pinned keys, and an adapter that cannot list.

Pins are real: an engine's lookup finds its chunks in L2 only, so the prefetch controller
`lookup_and_lock`s them on the `mock` adapter and holds the pins while it loads them into L1. The mock
adapter's simulated bandwidth is set low enough that those loads take ~3 s (under the 5 s L2 deadline),
and the test waits until the prefetch's L1 write reservations are visible (`state: writing`, which the
controller takes after locking in L2 and releases only after unlocking there) before it calls the route.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.http.frontend import detail, frontend, wait_for
from tests.integration.server.conftest import key

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend

ROOT = Path(__file__).resolve().parents[3]
# 2 objects of 256 KiB at ~160 KiB/s: a prefetch's two loads take ~3.1 s together, a store batch the same.
SLOW_MOCK = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 0.00016}
SLOW_S = 20.0  # waits that span a slow store or load


@pytest.fixture(scope="module")
def slow() -> Iterator[Frontend]:
    with frontend("--l2-adapter", json.dumps(SLOW_MOCK)) as running:
        yield running


def _l2_keys(fe: Frontend, salt: str) -> list[dict[str, Any]]:
    reply = fe.http.get("/l2/keys", params={"cache_salt": salt})
    assert reply.status_code == 200, reply.text
    assert reply.json()["next_page_token"] is None
    return [item["key"] for item in reply.json()["keys"]]


def _l1_objects(fe: Frontend, salt: str) -> list[dict[str, Any]]:
    reply = fe.http.get("/cache/objects", params={"cache_salt": salt})
    assert reply.status_code == 200, reply.text
    objects: list[dict[str, Any]] = reply.json()["objects"]
    return objects


def _in_l2_only(fe: Frontend, seq: int, salt: str) -> tuple[list[int], list[dict[str, Any]]]:
    """Store `seq` under `salt`, wait for both chunks in L2, then empty L1; the tokens and the L2 keys."""
    tokens = fe.store(seq, salt=salt)
    wait_for(lambda: len(_l2_keys(fe, salt)) == 2, SLOW_S)
    assert fe.http.post("/clear-cache").status_code == 200
    assert _l1_objects(fe, salt) == []
    return tokens, _l2_keys(fe, salt)


def _start_prefetch(fe: Frontend, tokens: list[int], rid: str, salt: str) -> None:
    """An engine's lookup that must load both chunks from L2; returns once the loads are under way."""
    fe.zmq.lookup(key(tokens, rid, worker=None, end=512, salt=salt))

    def loading() -> bool:
        objects = _l1_objects(fe, salt)
        return len(objects) == 2 and all(o["state"] == "writing" for o in objects)

    wait_for(loading, SLOW_S)


@pytest.mark.slow
def test_delete_skips_keys_a_prefetch_has_pinned_and_reports_them_locked(slow: Frontend) -> None:
    _, free_keys = _in_l2_only(slow, 2, "unpinned")
    tokens, pinned_keys = _in_l2_only(slow, 1, "pinned")
    ghost = {**pinned_keys[0], "chunk_hash_hex": "00" * 32}
    _start_prefetch(slow, tokens, "pin", "pinned")

    reply = slow.http.request("DELETE", "/l2", json={"keys": [*pinned_keys, *free_keys, ghost]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"requested": 5, "deleted": 2, "missing": 1, "locked": 2}
    assert _l2_keys(slow, "unpinned") == []

    # The pinned objects survived the delete: the prefetch that held them loads both chunks.
    assert slow.zmq.wait_prefetch_status("pin", SLOW_S) == 2
    # Done with the hit, as an engine is: unlocked, the prefetched objects can go (a forced clear in the
    # next test would otherwise have to keep their memory until the locks' TTL).
    slow.zmq.free_lookup_locks(key(tokens, "pin", worker=None, end=512, salt="pinned"))
    slow.zmq.end_session("pin")
    assert sorted(k["chunk_hash_hex"] for k in _l2_keys(slow, "pinned")) == sorted(
        k["chunk_hash_hex"] for k in pinned_keys
    )
    # Unpinned now: the same request deletes them.
    again = slow.http.request("DELETE", "/l2", json={"keys": pinned_keys})
    assert again.json() == {"requested": 2, "deleted": 2, "missing": 0, "locked": 0}
    assert _l2_keys(slow, "pinned") == []


@pytest.mark.slow
def test_a_clear_leaves_the_write_reservations_of_a_prefetch_in_flight(slow: Frontend) -> None:
    tokens, _ = _in_l2_only(slow, 3, "reserved")
    _start_prefetch(slow, tokens, "res-1", "reserved")

    gentle = slow.http.post("/cache/clear", json={"tier": "l1", "force": False})
    assert gentle.status_code == 200, gentle.text
    assert gentle.json()["removed_objects"] == 0  # reservations are being written
    assert gentle.json()["writing_objects"] == 2
    assert [o["state"] for o in _l1_objects(slow, "reserved")] == ["writing", "writing"]

    # Even a forced clear leaves writes in flight: they land as stores that came after the clear.
    forced = slow.http.post("/cache/clear", json={"tier": "l1", "force": True})
    assert forced.status_code == 200, forced.text
    assert forced.json() == {
        "status": "ok",
        "cleared": {"tier": "l1"},
        "force": True,
        "removed_objects": 0,
        "locked_objects": 0,
        "writing_objects": 2,
        "retired_objects": 0,
        "retired_bytes": 0,
    }
    assert slow.zmq.wait_prefetch_status("res-1", SLOW_S) == 2
    slow.zmq.free_lookup_locks(key(tokens, "res-1", worker=None, end=512, salt="reserved"))
    slow.zmq.end_session("res-1")
    l1 = slow.http.get("/status").json()["storage_manager"]["l1_manager"]
    assert l1["retired_object_count"] == 0
    # L2 still holds the objects and a new lookup finds them.
    assert len(_l2_keys(slow, "reserved")) == 2
    slow.zmq.lookup(key(tokens, "res-2", worker=None, end=512, salt="reserved"))
    assert slow.zmq.wait_prefetch_status("res-2", SLOW_S) == 2
    slow.zmq.free_lookup_locks(key(tokens, "res-2", worker=None, end=512, salt="reserved"))
    slow.zmq.end_session("res-2")


def test_an_adapter_that_cannot_list_answers_501_and_still_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server process imports the plugin from this checkout, wherever pytest was started.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    spec = {
        "type": "plugin",
        "module_path": "tests.integration.http.unlistable_l2",
        "class_name": "UnlistableL2Adapter",
    }
    with frontend("--l2-adapter", json.dumps(spec)) as fe:
        listing = fe.http.get("/l2/keys")
        assert listing.status_code == 501, listing.text
        assert "cannot list" in detail(listing)
        filtered = fe.http.get("/l2/keys", params={"cache_salt": "s", "page_size": 5})
        assert filtered.status_code == 501
        objects = fe.http.get("/cache/objects", params={"tier": "l2"})
        assert objects.status_code == 501 and "#0 cannot list" in detail(objects)
        bad = fe.http.get("/l2/keys", params={"page_size": 0})  # bad input is still a 400
        assert bad.status_code == 400 and detail(bad).startswith("page_size")

        # The adapter works otherwise: stores land in it, and keys known elsewhere can be deleted.
        fe.store(1, salt="plug")

        def usage_objects() -> int:
            adapters = fe.http.get("/status").json()["storage_manager"]["l2_adapters"]
            usage = adapters[0]["usage"]
            return int(usage["objects"]) if usage else -1

        wait_for(lambda: usage_objects() == 2)
        keys = [o["key"] for o in _l1_objects(fe, "plug")]
        assert len(keys) == 2
        deleted = fe.http.request("DELETE", "/l2", json={"keys": keys})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"requested": 2, "deleted": 2, "missing": 0, "locked": 0}
        assert usage_objects() == 0
