"""Every lmcache-driven op over a real socket, against the wire-protocol.md semantics."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from lmcache.adapters.transport.wire_types import BlockAllocationRecord
from tests.integration.server.conftest import Engine, hit_chunks, key, tokens_for

if TYPE_CHECKING:
    from tests.integration.server.conftest import RunningServer

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 32 blocks of 16


def test_control_ops(server: RunningServer) -> None:
    with server.client() as c:
        assert c.noop() == "OK"
        assert c.get_chunk_size() == 256
        assert c.ping(None) is True
        assert c.ping(424242) is True  # unknown ids are ignored
        assert c.get_experimental() == ["kv_event_stream"]
        assert c.report_block_allocation(1, "m", [BlockAllocationRecord("r", [1, 2], [5, 6])]) is None
        assert c.clear(False) is None


def test_store_lookup_retrieve_round_trip(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(1)
        assert hit_chunks(c, tokens, "cold") == 0
        original = engine.blocks(BLOCKS)
        assert c.store(key(tokens, "cold", end=512), 1000, [BLOCKS], b"ev") == (b"stub_ipc_handle", True)
        c.end_session("cold")
        engine.zero(BLOCKS)
        assert hit_chunks(c, tokens, "warm") == 2
        assert c.query_prefetch_status("warm") == 0  # handed over once
        assert c.retrieve(key(tokens, "warm", end=512), 1000, [BLOCKS], b"ev", 0) == (
            b"stub_ipc_handle",
            True,
        )
        assert all(torch.equal(a, b) for a, b in zip(original, engine.blocks(BLOCKS), strict=True))
        # the retrieve released the lookup's lock: a second retrieve finds the objects unlocked
        assert c.retrieve(key(tokens, "warm", end=512), 1000, [BLOCKS], b"ev", 0) == (
            b"stub_ipc_handle",
            False,
        )
        c.unregister_kv_cache(1000)
        engine.close()
    server.wait_for_log(re.escape("Registered KV cache for GPU ID 1000 with 2 layers"))
    server.wait_for_log("Stored 512 tokens in")
    server.wait_for_log("Retrieved 512 tokens in")


def test_skip_first_n_tokens_and_partial_range(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(2)
        original = engine.blocks(BLOCKS)
        assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
        engine.zero(BLOCKS)
        assert hit_chunks(c, tokens, "r1") == 2
        assert c.retrieve(key(tokens, "r1", end=512), 1000, [BLOCKS], b"", 256)[1]
        after = engine.blocks(BLOCKS)
        assert all(t[:, :16].abs().sum() == 0 for t in after)  # first chunk untouched
        assert all(torch.equal(a[:, 16:], b[:, 16:]) for a, b in zip(original, after, strict=True))
        engine.zero(BLOCKS)
        assert hit_chunks(c, tokens, "r2") == 2
        ok = c.retrieve(key(tokens, "r2", start=256, end=512), 1000, [BLOCKS[16:]], b"", 0)
        assert ok == (b"stub_ipc_handle", True)
        assert all(
            torch.equal(a[:, 16:], b[:, 16:]) for a, b in zip(original, engine.blocks(BLOCKS), strict=True)
        )
        engine.close()


def test_store_rules(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(3)
        # unregistered instance, block-id underflow, out-of-range ids: nothing stored
        assert c.store(key(tokens, "a", end=512), 77, [BLOCKS], b"") == (b"", False)
        assert c.store(key(tokens, "a", end=512), 1000, [BLOCKS[:20]], b"") == (b"stub_ipc_handle", False)
        assert c.store(key(tokens, "a", end=512), 1000, [[*BLOCKS[:31], 64]], b"") == (b"", False)
        assert c.store(key(tokens, "a", end=512), 1000, [BLOCKS, BLOCKS], b"") == (b"", False)
        assert hit_chunks(c, tokens, "a") == 0
        # an all-null chunk is skipped, the other is stored
        null_first = [0] * 16 + BLOCKS[16:]
        assert c.store(key(tokens, "b", end=512), 1000, [null_first], b"") == (b"stub_ipc_handle", True)
        assert hit_chunks(c, tokens, "b2") == 0  # prefix broken at chunk 0
        c.free_lookup_locks(key(tokens, "b2", worker=None, end=512))
        assert c.store(key(tokens, "c", end=512), 1000, [BLOCKS], b"")[1]
        assert hit_chunks(c, tokens, "c2") == 2
        engine.close()


def test_free_lookup_locks_end_session_and_clear(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(4)
        assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
        assert hit_chunks(c, tokens, "l") == 2
        c.free_lookup_locks(key(tokens, "l", worker=None, end=512))
        c.clear(False)  # unlocked now, so cleared
        assert hit_chunks(c, tokens, "after-clear") == 0
        assert c.store(key(tokens, "s2", end=512), 1000, [BLOCKS], b"")[1]
        assert hit_chunks(c, tokens, "locked") == 2
        c.clear(False)  # locked objects survive a non-forced clear
        assert hit_chunks(c, tokens, "still") == 2
        c.clear(True)
        assert hit_chunks(c, tokens, "forced") == 0
        c.end_session("locked")
        c.end_session("never-seen")
        engine.close()


def test_wait_prefetch_status(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(5)
        assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
        c.lookup(key(tokens, "w", worker=None, end=512))
        assert c.wait_prefetch_status("w", 2.0) == 2
        assert c.wait_prefetch_status("unknown", 0.1) == 0
        engine.close()


def test_lookup_without_registration_reads_zero(server: RunningServer) -> None:
    with server.client() as c:
        c.lookup(key(tokens_for(6), "x", worker=None, end=512))
        assert c.query_prefetch_status("x") == 0


def test_kv_event_stream(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        stream = c.subscribe_kv_events(1000, "m", 0, 16)
        first = stream.next()
        assert first is not None and first.enabled and first.events == []
        tokens = tokens_for(7)
        assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
        stream.ack()
        batch = stream.next()
        assert batch is not None
        stored = [e for e in batch.events if e.kind == "stored"]
        assert len(stored) == 2
        assert stored[0].parent_block_hash is None
        assert stored[1].parent_block_hash == stored[0].block_hashes[0]
        assert stored[0].token_ids == tokens[:256]
        c.clear(True)
        stream.ack()
        removed = stream.next()
        assert removed is not None and removed.events[0].kind == "removed"
        assert set(removed.events[0].block_hashes) == {e.block_hashes[0] for e in stored}
        stream.cancel()
        assert stream.next() is None  # the payload-less end message
        engine.close()


def test_unregister_ends_stream_and_rejects_transfers(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        engine.register()  # a re-registration only refreshes
        stream = c.subscribe_kv_events(1000, "m", 0, 16)
        assert stream.next() is not None
        c.unregister_kv_cache(1000)
        assert stream.next() is None
        assert c.store(key(tokens_for(8), "s", end=512), 1000, [BLOCKS], b"") == (b"", False)
        c.unregister_kv_cache(1000)  # unknown: a no-op
        engine.close()


def test_retrieve_from_unregistered_instance_releases_its_lookup_locks(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(9)
        assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
        assert hit_chunks(c, tokens, "r") == 2  # the lookup read-locks both chunks
        c.unregister_kv_cache(1000)
        assert c.retrieve(key(tokens, "r", end=512), 1000, [BLOCKS], b"", 0) == (b"", False)
        c.clear(False)  # a non-forced clear only drops unlocked objects: the failed retrieve released them
        engine.register()
        assert hit_chunks(c, tokens, "after") == 0
        engine.close()


def test_an_instance_id_registered_again_with_new_memory_gets_the_new_memory(server: RunningServer) -> None:
    """A worker restarted under its old id (before the reaper ran) must not be served into dead segments."""
    with server.client() as c:
        old = Engine(c, instance_id=1010, seed=1)
        old.register()
        tokens = tokens_for(21)
        original = old.blocks(BLOCKS)
        assert c.store(key(tokens, "s21", end=512), 1010, [BLOCKS], b"")[1]
        c.end_session("s21")
        new = Engine(c, instance_id=1010, seed=2)  # the restarted engine: new segments, same id
        new.register()
        new.zero(BLOCKS)
        assert hit_chunks(c, tokens, "r21") == 2
        assert c.retrieve(key(tokens, "r21", end=512), 1010, [BLOCKS], b"", 0)[1]
        assert all(torch.equal(a, b) for a, b in zip(original, new.blocks(BLOCKS), strict=True))
        new.register()  # the same memory again: a refresh, nothing dropped
        assert c.store(key(tokens_for(22), "s22", end=512), 1010, [BLOCKS], b"")[1]
        c.unregister_kv_cache(1010)
        old.close()
        new.close()
    server.wait_for_log("registered new KV memory under its id")
