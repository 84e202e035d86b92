"""EngineDrivenService (wire-protocol.md §5.11) over fake ports: the SHM-pool path and the bytes path.

The "client" here writes and reads the pool through the FakeL1Memory the service hands slots of, as a
worker maps the real pool. Assertions are on outcomes: objects visible or not, their bytes, lock counts.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from lmcache.domain.cache_engine import RequestError
from lmcache.domain.engine_driven import EngineDrivenService, PoolSlots, RetrieveAnswer
from lmcache.domain.events import TransferCompleted, TransferKind
from lmcache.domain.kv_layout import LayoutError
from tests.unit._engine import BS, CS, MODEL, OBJECT_BYTES, make_server, request

if TYPE_CHECKING:
    from typing import Any

    from tests.unit._engine import Server

POOL = "lmcache_l1_pool_unit"
TOKENS = list(range(100, 100 + 3 * CS))
ID = 7


def service(pool: str = POOL) -> tuple[Server, EngineDrivenService]:
    """A server with worker ID registered engine-driven: 2 layers, hidden 8, fp16 (256-byte objects)."""
    s = make_server()
    svc = EngineDrivenService(s.engine, s.memory, pool)
    svc.register(ID, MODEL, 1, BS, 2, 8, "torch.float16", False, None)
    return s, svc


def payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(OBJECT_BYTES)


def pool_store(s: Server, svc: EngineDrivenService, tokens: list[int] = TOKENS) -> list[bytes]:
    """prepare_store, write every slot as a worker does, commit_store; returns what was written."""
    prepared = svc.prepare_store(request(tokens, "w"), ID)
    assert prepared is not None
    written = []
    for extent, chunk in zip(prepared.extents, prepared.chunk_indices, strict=True):
        written.append(payload(chunk))
        s.memory.view(extent.offset, OBJECT_BYTES)[:] = written[-1]
    assert svc.commit_store(request(tokens, "w"), ID, None)
    return written


def lookup(s: Server, tokens: list[int] = TOKENS, readers: int = 1, rid: str = "req") -> int | None:
    s.engine.lookup(request(tokens, rid, worker_id=None, readers=readers))
    return s.engine.query(rid)


def test_register_answers_the_pool_and_a_second_register_only_refreshes() -> None:
    s, svc = service()
    assert svc.register(ID, MODEL, 1, BS, 5, 64, "bfloat16", True, 1) == (POOL, s.memory.size_bytes)
    layout = s.engine.workers.layout_for(MODEL, 1)
    assert layout is not None and layout.object_bytes == OBJECT_BYTES  # the first registration's
    assert layout.shape == [2, 2, CS, 8]  # slots default to the chunk size
    _, no_pool = service("")
    assert no_pool.register(ID, MODEL, 1, BS, 2, 8, "float16", False, None) == ("", 0)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((BS, 2, 8, "float16", False, 0), RequestError),
        ((BS, 0, 8, "float16", False, None), RequestError),
        ((BS, 2, 0, "float16", False, None), RequestError),
        ((0, 2, 8, "float16", False, None), RequestError),
        ((BS, 2, 8, "torch.complex64", False, None), LayoutError),
    ],
    ids=["slots", "layers", "hidden", "block_size", "dtype"],
)
def test_register_refuses_bad_geometry_and_registers_nothing(args: tuple[Any, ...], error: type) -> None:
    s = make_server()
    svc = EngineDrivenService(s.engine, s.memory, POOL)
    with pytest.raises(error):
        svc.register(ID, MODEL, 1, *args)
    assert s.engine.workers.get(ID) is None


def test_a_pool_store_becomes_visible_at_commit_with_the_bytes_the_client_wrote() -> None:
    s, svc = service()
    prepared = svc.prepare_store(request(TOKENS, "w"), ID)
    assert prepared is not None and prepared.chunk_indices == (0, 1, 2)
    assert all(e.size >= OBJECT_BYTES for e in prepared.extents)
    assert len({e.offset for e in prepared.extents}) == 3
    for chunk, extent in enumerate(prepared.extents):
        s.memory.view(extent.offset, OBJECT_BYTES)[:] = payload(chunk)
    assert lookup(s, rid="early") == 0  # reserved, not visible
    assert svc.commit_store(request(TOKENS, "w"), ID, None)
    assert lookup(s) == 3
    assert [s.object(k) for k in s.keys(TOKENS)] == [payload(c) for c in range(3)]
    [done] = s.events.of_type(TransferCompleted)
    assert (done.kind, done.ok, done.tokens, done.nbytes) == (
        TransferKind.STORE,
        True,
        3 * CS,
        3 * OBJECT_BYTES,
    )


def test_prepare_store_skips_present_and_in_flight_chunks() -> None:
    s, svc = service()
    pool_store(s, svc, TOKENS[: 2 * CS])
    prepared = svc.prepare_store(request(TOKENS, "w"), ID)
    assert prepared is not None and prepared.chunk_indices == (2,)
    again = svc.prepare_store(request(TOKENS, "other"), ID)  # chunk 2 is being written
    assert again == PoolSlots()
    assert svc.commit_store(request(TOKENS, "w"), ID, None)
    assert lookup(s) == 3


def test_commit_store_without_a_pending_prepare_is_false() -> None:
    s, svc = service()
    assert not svc.commit_store(request(TOKENS), ID, None)
    pool_store(s, svc)
    assert svc.prepare_store(request(TOKENS, "w"), ID) == PoolSlots()
    assert not svc.commit_store(request(TOKENS, "w"), ID, None)  # everything cached: nothing pending
    assert lookup(s) == 3


def test_the_bytes_path_stores_the_message_chunks() -> None:
    s, svc = service("")
    assert svc.prepare_store(request(TOKENS), ID) is None
    chunks = [memoryview(payload(c)) for c in range(3)]
    assert svc.commit_store(request(TOKENS), ID, chunks)
    assert [s.object(k) for k in s.keys(TOKENS)] == [payload(c) for c in range(3)]
    assert svc.commit_store(request(TOKENS), ID, [memoryview(payload(9))] * 3)  # present: kept as is
    assert [s.object(k) for k in s.keys(TOKENS)] == [payload(c) for c in range(3)]


@pytest.mark.parametrize("chunks", [2, 4, "short"])
def test_the_bytes_path_refuses_the_wrong_chunks_and_reserves_nothing(chunks: int | str) -> None:
    s, svc = service("")
    data = [memoryview(payload(0)[:-1])] * 3 if chunks == "short" else [memoryview(payload(0))] * int(chunks)
    with pytest.raises(RequestError, match="chunks of"):
        svc.commit_store(request(TOKENS), ID, data)
    assert s.l1.object_count == 0


def test_a_pool_retrieve_hands_out_the_slots_and_keeps_the_locks_until_commit() -> None:
    s, svc = service()
    written = pool_store(s, svc)
    assert lookup(s, readers=2) == 3
    answer = svc.prepare_retrieve(request(TOKENS), ID)
    assert answer.ok and answer.chunks == () and answer.slots is not None
    assert [bytes(s.memory.view(e.offset, OBJECT_BYTES)) for e in answer.slots.extents] == written
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [2, 2, 2]
    assert svc.commit_retrieve(request(TOKENS), ID)
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]
    assert svc.commit_retrieve(request(TOKENS), ID)  # nothing pending any more: released once
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 1]


def test_a_retrieve_of_anything_unlocked_fails_and_releases_what_it_held() -> None:
    s, svc = service()
    pool_store(s, svc)
    assert lookup(s, TOKENS[: 2 * CS], readers=2) == 2  # chunk 2 present but not locked
    assert svc.prepare_retrieve(request(TOKENS), ID) == RetrieveAnswer(False)
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [1, 1, 0]
    [done] = [e for e in s.events.of_type(TransferCompleted) if e.kind is TransferKind.RETRIEVE]
    assert not done.ok


def test_the_bytes_path_retrieve_returns_the_objects_and_releases_at_once() -> None:
    s, svc = service("")
    chunks = [memoryview(payload(c)) for c in range(3)]
    assert svc.commit_store(request(TOKENS), ID, chunks)
    assert lookup(s) == 3
    answer = svc.prepare_retrieve(request(TOKENS), ID)
    assert answer.ok and answer.slots is None
    assert [bytes(d) for d in answer.chunks] == [payload(c) for c in range(3)]
    assert [s.l1.readers(k) for k in s.keys(TOKENS)] == [0, 0, 0]
    assert svc.commit_retrieve(request(TOKENS), ID)


@pytest.mark.parametrize("op", ["prepare_store", "commit_store", "prepare_retrieve", "commit_retrieve"])
@pytest.mark.parametrize("instance", [5, 99], ids=["lmcache_driven", "unknown"])
def test_ops_of_an_unknown_or_lmcache_driven_instance_are_refused(op: str, instance: int) -> None:
    s, svc = service()
    s.register(5)
    args: tuple[Any, ...] = (request(TOKENS), instance) + ((None,) if op == "commit_store" else ())
    with pytest.raises(RequestError, match=f"instance {instance}"):
        getattr(svc, op)(*args)
    assert s.l1.object_count == 0


def test_a_bad_range_is_refused() -> None:
    s, svc = service()
    with pytest.raises(RequestError, match="chunk-aligned"):
        svc.prepare_store(request(TOKENS, start=1), ID)
    assert s.l1.object_count == 0


def test_unregister_aborts_pending_writes_and_releases_pending_reads() -> None:
    s, svc = service()
    first, second = TOKENS[: 2 * CS], list(range(500, 500 + 2 * CS))
    pool_store(s, svc, first)
    assert lookup(s, first) == 2
    assert svc.prepare_retrieve(request(first), ID).ok  # locks kept for a commit that never comes
    pending = svc.prepare_store(request(second, "w2"), ID)
    assert pending is not None and len(pending.extents) == 2  # a write never committed
    assert svc.unregister(ID)
    assert s.engine.workers.get(ID) is None
    assert [s.l1.readers(k) for k in s.keys(first)] == [0, 0]
    assert not any(s.l1.contains(k) for k in s.keys(second))
    assert s.l1.object_count == 2
    assert not svc.unregister(ID)
    svc.register(ID, MODEL, 1, BS, 2, 8, "float16", False, None)
    again = svc.prepare_store(request(second, "w2"), ID)
    assert again is not None and again.chunk_indices == (0, 1)  # reservable again
