"""`POST /cache/clear` over real HTTP: `force` decides whether read-locked objects go; bad bodies are 400s.

(Write reservations a forced clear leaves in place are covered in test_l2_pins_and_listing.py, where a slow
L2 load keeps them open.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import torch

from tests.integration.http.frontend import BLOCKS, detail, frontend
from tests.integration.server.conftest import key

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend


@pytest.fixture(scope="module")
def fe() -> Iterator[Frontend]:
    with frontend() as running:
        yield running


def _objects(fe: Frontend) -> list[dict[str, Any]]:
    reply = fe.http.get("/cache/objects")
    assert reply.status_code == 200, reply.text
    objects: list[dict[str, Any]] = reply.json()["objects"]
    return objects


def _l1_used(fe: Frontend) -> int:
    return int(fe.http.get("/status").json()["storage_manager"]["l1_manager"]["memory_used_bytes"])


def test_force_decides_whether_read_locked_objects_are_cleared(fe: Frontend) -> None:
    assert fe.http.post("/clear-cache").status_code == 200
    locked = fe.store(31, salt="locked")
    fe.store(32, salt="free")
    # A scheduler's lookup read-locks its hit until the worker retrieves it (or the lock's TTL).
    fe.zmq.lookup(key(locked, "held", worker=None, end=512, salt="locked"))
    assert fe.zmq.wait_prefetch_status("held", 10) == 2
    assert sorted((o["key"]["cache_salt"], o["readers"]) for o in _objects(fe)) == [
        ("free", 0),
        ("free", 0),
        ("locked", 1),
        ("locked", 1),
    ]

    gentle = fe.http.post("/cache/clear", json={"tier": "l1", "force": False})
    assert gentle.status_code == 200, gentle.text
    assert gentle.json() == {
        "status": "ok",
        "cleared": {"tier": "l1"},
        "force": False,
        "removed_objects": 2,
        "locked_objects": 2,  # "0 removed" never hides what stayed
        "writing_objects": 0,
        "retired_objects": 0,
        "retired_bytes": 0,
    }
    assert [(o["key"]["cache_salt"], o["readers"]) for o in _objects(fe)] == [("locked", 1), ("locked", 1)]
    assert _l1_used(fe) > 0
    # Litestar reads JSON leniently ("false", 0 and "0" are booleans), but never as a forced clear.
    for lenient in ("false", 0, "0"):
        reply = fe.http.post("/cache/clear", json={"tier": "l1", "force": lenient})
        assert reply.status_code == 200 and reply.json()["removed_objects"] == 0, (lenient, reply.text)
    assert len(_objects(fe)) == 2

    forced = fe.http.post("/cache/clear", json={"tier": "l1", "force": True})
    assert forced.status_code == 200, forced.text
    assert forced.json() == {
        "status": "ok",
        "cleared": {"tier": "l1"},
        "force": True,
        "removed_objects": 2,
        "locked_objects": 0,
        "writing_objects": 0,
        "retired_objects": 2,
        "retired_bytes": 2 * 262144,
    }
    assert _objects(fe) == []
    # The held objects' memory waits for their reader: a new object must never get it while it may be read.
    assert _l1_used(fe) == 2 * 262144
    l1 = fe.http.get("/status").json()["storage_manager"]["l1_manager"]
    assert (l1["retired_object_count"], l1["retired_bytes"]) == (2, 2 * 262144)
    # The lookup's worker comes too late: its retrieve fails cleanly (the engine recomputes), it lets go of
    # its locks, and only then does the memory go. The server goes on serving.
    assert not fe.zmq.retrieve(key(locked, "held", end=512, salt="locked"), 1000, [BLOCKS], b"", 0)[1]
    assert _l1_used(fe) == 0
    fe.zmq.end_session("held")
    assert fe.hits(locked, "after-force", salt="locked") == 0
    fe.store(31, salt="locked")
    assert fe.hits(locked, "stored-again", salt="locked") == 2


def test_stores_after_a_clear_with_locked_objects_land_and_are_served_byte_exact() -> None:
    with frontend() as fe:
        _store_again_after_a_forced_clear(fe)


def _store_again_after_a_forced_clear(fe: Frontend) -> None:
    tokens = fe.store(41, salt="relock")
    fe.zmq.lookup(key(tokens, "old-reader", worker=None, end=512, salt="relock"))
    assert fe.zmq.wait_prefetch_status("old-reader", 10) == 2  # read-locked, and the reader goes away
    assert fe.http.post("/cache/clear", json={"tier": "l1", "force": True}).json()["retired_objects"] == 2
    # The engine's KV for those blocks changes; the same keys are stored again and acknowledged...
    fe.engine.zero(BLOCKS)
    for layer in fe.engine.layers:
        layer.tensor[:, BLOCKS] = torch.randn(layer.tensor[:, BLOCKS].shape).half()
    expected = fe.engine.blocks(BLOCKS)
    assert fe.zmq.store(key(tokens, "again", end=512, salt="relock"), 1000, [BLOCKS], b"")[1]
    fe.zmq.end_session("again")
    # ...so they must be there, byte-exact, while the old reader still holds its locks on the keys.
    assert _objects_of(fe, "relock") == 2
    fe.zmq.lookup(key(tokens, "new-reader", worker=None, end=512, salt="relock"))
    assert fe.zmq.wait_prefetch_status("new-reader", 10) == 2
    fe.engine.zero(BLOCKS)
    assert fe.zmq.retrieve(key(tokens, "new-reader", end=512, salt="relock"), 1000, [BLOCKS], b"", 0)[1]
    fe.zmq.end_session("new-reader")
    assert all(torch.equal(a, b) for a, b in zip(fe.engine.blocks(BLOCKS), expected, strict=True))
    # The old reader finally lets go: the retired memory goes, the new objects stay.
    fe.zmq.free_lookup_locks(key(tokens, "old-reader", worker=None, end=512, salt="relock"))
    fe.zmq.end_session("old-reader")
    l1 = fe.http.get("/status").json()["storage_manager"]["l1_manager"]
    assert (l1["retired_object_count"], l1["memory_used_bytes"]) == (0, 2 * 262144)
    assert fe.hits(tokens, "still-there", salt="relock") == 2


def _objects_of(fe: Frontend, salt: str) -> int:
    return sum(1 for o in _objects(fe) if o["key"]["cache_salt"] == salt and o["state"] == "ready")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tier": "l2"}, "tier"),
        ({"tier": "L1"}, "tier"),
        ({"tier": ""}, "tier"),
        ({"tier": 1}, "tier"),
        ({"tier": None}, "tier"),
        ({"tier": ["l1"]}, "tier"),
        ({"tier": "l1", "force": "maybe"}, "force"),
        ({"tier": "l1", "force": 2}, "force"),
        ({"tier": "l1", "force": []}, "force"),
        ({"force": None}, "force"),
        ([{"tier": "l1"}], "body"),
        ("l1", "body"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(fe: Frontend, body: object, field: str) -> None:
    fe.store(33)
    before = len(_objects(fe))
    reply = fe.http.post("/cache/clear", json=body)
    assert reply.status_code == 400, reply.text
    assert detail(reply).startswith(field), detail(reply)
    assert len(_objects(fe)) == before  # nothing was cleared


def test_a_body_that_is_not_json_is_refused(fe: Frontend) -> None:
    reply = fe.http.post("/cache/clear", content=b"{tier: l1", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "JSON" in detail(reply)
