"""End to end on CPU (issue 20 "Done when"): store, lookup, cb_register_rope over SHM, retrieve.

The engine's blocks must hold V exactly and K equal to a reference re-rotation within fp16 tolerance,
every other slot untouched; then the allocation gate (defer, straddle), the repeat guard, an empty list
and the stashed lock counts in `/status` after `end_session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import torch

from tests.integration.server.blend_rig import CS, V5_QUERIES, BlendEngine, S, bkey, rerotate
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from lmcache.adapters.transport.blend_wire import CBMatchResult
    from tests.integration.server.conftest import RunningServer

STORE_BLOCKS = [1, 2, 3]  # S chunk i lives in block i + 1
TABLE = [10, 11, 12]  # the request's block table from token 0 (16-token blocks)
QUERY = V5_QUERIES[0][0]  # S[16:48] at 5: (16 -> 5, h1), (32 -> 21, h2)


def _status(srv: RunningServer) -> dict[str, Any]:
    return httpx.get(f"{srv.http_url}/status").json()


def _lookup(engine: BlendEngine, rid: str) -> list[CBMatchResult]:
    result, _ = engine.blend.cb_unified_lookup(bkey(QUERY, rid))
    return result.non_prefix_segments


def _slot(pos: int) -> tuple[int, int]:
    return TABLE[pos // 16], pos % 16


def test_scatter_writes_v_exactly_and_k_rerotated_and_nothing_else() -> None:
    with run_server("--engine-type", "blend", "--chunk-size", str(CS)) as srv, srv.client() as c:
        engine = BlendEngine(c, seed=5)
        engine.register()
        assert c.store(bkey(S, "s", worker=0), 1000, [STORE_BLOCKS])[1]
        stored = engine.snapshot()
        engine.register_rope()
        matches = _lookup(engine, "q")
        assert [(m.old_st, m.cur_st) for m in matches] == [(16, 5), (32, 21)]
        before = engine.snapshot()
        reply = engine.blend.cb_retrieve_pre_computed(bkey(QUERY, "q", worker=0), matches, [TABLE], 1000)
        assert reply == (b"stub_ipc_handle", True)
        after = engine.snapshot()
        cache = engine.cache.tensor
        touched = set()
        for m in matches:
            src_block = STORE_BLOCKS[m.old_st // CS]
            dest = [_slot(m.cur_st + j) for j in range(CS)]
            touched.update(dest)
            for layer in range(2):
                got_v = torch.stack([after[layer][1, b, s] for b, s in dest])
                assert torch.equal(got_v, stored[layer][1, src_block])  # V bit for bit
                got_k = torch.stack([after[layer][0, b, s] for b, s in dest]).double()
                want_k = rerotate(stored[layer][0, src_block], m.old_st, m.cur_st, cache)
                assert torch.allclose(got_k, want_k, atol=2e-2, rtol=2e-2)
                assert not torch.equal(got_k, stored[layer][0, src_block].double())  # it did move
        mask = torch.ones(64, 16, dtype=torch.bool)
        for b, s in touched:
            mask[b, s] = False
        for layer in range(2):
            assert torch.equal(after[layer][:, mask], before[layer][:, mask])  # nothing else changed
        # repeat: the same matches to the same blocks do nothing (zeroed slots stay zero)
        for t in engine.layers:
            t.tensor[:, TABLE] = 0
        assert engine.blend.cb_retrieve_pre_computed(bkey(QUERY, "q", worker=0), matches, [TABLE], 1000)[1]
        assert all(t.tensor[:, TABLE].abs().sum() == 0 for t in engine.layers)
        engine.close()
    assert "CacheBlend scattered 2 chunks (32 tokens)" in srv.log()


def test_gates_empty_list_and_lock_counts_after_end_session() -> None:
    with run_server("--engine-type", "blend", "--chunk-size", str(CS)) as srv, srv.client() as c:
        engine = BlendEngine(c, seed=6)
        engine.register()
        assert c.store(bkey(S, "s", worker=0), 1000, [STORE_BLOCKS])[1]
        c.end_session("s")
        engine.register_rope()
        retrieve = engine.blend.cb_retrieve_pre_computed
        matches = _lookup(engine, "a")
        assert _status(srv)["cb_blend"]["stashed_sparse_locks"] == 2
        before = engine.snapshot()
        # the table covers 16 tokens: h2 alone (21..37) lies beyond it -> deferred; with h1 (5..21) -> refused
        assert retrieve(bkey(QUERY, "a", worker=0), matches[1:], [[10]], 1000) == (b"stub_ipc_handle", True)
        assert retrieve(bkey(QUERY, "a", worker=0), matches, [[10, 11]], 1000) == (b"stub_ipc_handle", False)
        assert all(torch.equal(a, b) for a, b in zip(before, engine.snapshot(), strict=True))  # never partial
        assert _status(srv)["cb_blend"]["stashed_sparse_locks"] == 2  # deferred and refused keep locks
        c.end_session("a")
        assert _status(srv)["cb_blend"]["stashed_sparse_locks"] == 0
        # an empty list releases every stashed lock and writes nothing
        _lookup(engine, "b")
        assert retrieve(bkey(QUERY, "b", worker=0), [], [TABLE], 1000) == (b"stub_ipc_handle", True)
        doc = _status(srv)
        assert doc["cb_blend"]["stashed_sparse_locks"] == 0 and doc["active_cb_lookups"] == 0
        # with no lock left anywhere, a non-forced clear empties L1: nothing leaked
        c.end_session("b")
        c.clear(False)
        assert _status(srv)["storage_manager"]["l1_manager"]["total_object_count"] == 0
        # without rope state the retrieve fails (and says why in the log)
        engine.blend.cb_unregister_rope(1000)
        assert retrieve(bkey(QUERY, "c", worker=0), [], [TABLE], 1000) == (b"", False)
        engine.close()
    assert "has no CB rope registration" in srv.log()
