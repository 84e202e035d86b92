"""CacheBlend over an L2 with a gap (cacheblend.md §5): `fault_inject` drops the second chunk's load.

With `--enable-segmented-prefix` the chunks that loaded past the gap ride `segmented_prefix_segments`
and only the gap is fetched again; without it, as LMCache 0.5.6 does, the prefix stops at the gap and
the later chunks come back through the fingerprint path as same-position matches. Either way the
retrieve puts every chunk back exactly where it was (unshifted: no rotation).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import torch

from lmcache.domain.hashing import TokenHasher
from tests.integration.server.blend_rig import CS, BlendEngine, bkey
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.adapters.transport.wire_types import CacheKey

T = list(range(5000, 5064))  # 4 chunks
H = [h.hex() for h in TokenHasher(CS).chunk_hashes(T)]
BLOCKS = [1, 2, 3, 4]


def _wait_files(base: Path, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(list(base.rglob("*.kv"))) < n:
        assert time.monotonic() < deadline, "L2 never received the objects"
        time.sleep(0.02)


@pytest.mark.parametrize("segmented", [True, False])
def test_a_gap_in_the_l2_prefix(tmp_path: Path, segmented: bool) -> None:
    base = tmp_path / "l2"
    spec = {
        "type": "fault_inject",
        "adapter": {"type": "fs", "base_path": str(base)},
        "drop_load_indices": [1],
    }
    flags = ["--engine-type", "blend", "--chunk-size", str(CS), "--l2-adapter", json.dumps(spec)]
    if segmented:
        flags.append("--enable-segmented-prefix")
    with run_server(*flags) as srv, srv.client() as c:
        engine = BlendEngine(c, seed=9)
        engine.register()
        engine.register_rope()
        assert c.store(bkey(T, "s", worker=0), 1000, [BLOCKS])[1]
        c.end_session("s")
        original = engine.snapshot()
        _wait_files(base, 4)
        assert httpx.post(f"{srv.http_url}/cache/clear", json={"tier": "l1", "force": True}).status_code < 300
        result, calls = engine.blend.cb_unified_lookup(bkey(T, "q"))
        # L1 was cleared, so everything below came from L2 (the first poll usually finds the loads still
        # running; on a loaded machine they may already be done, so the poll count is not asserted)
        assert calls >= 1
        assert result.prefix_coverage_tokens == 16
        segments = [(m.old_st, m.cur_st, m.hash.hex()) for m in result.segmented_prefix_segments]
        others = [(m.old_st, m.cur_st, m.hash.hex()) for m in result.non_prefix_segments]
        if segmented:
            assert segments == [(32, 32, H[2]), (48, 48, H[3])]
            assert others == [(16, 16, H[1])]  # the gap, loaded again through the fingerprint path
        else:
            assert segments == []
            assert others == [(16, 16, H[1]), (32, 32, H[2]), (48, 48, H[3])]
        for t in engine.layers:
            t.tensor[:, BLOCKS] = 0
        assert c.retrieve(_prefix_key(T, "q"), 1000, [BLOCKS[:1]], b"", 0)[1]  # the prefix, as vLLM loads it
        matches = [*result.segmented_prefix_segments, *result.non_prefix_segments]
        reply = engine.blend.cb_retrieve_pre_computed(bkey(T, "q", worker=0), matches, [BLOCKS], 1000)
        assert reply == (b"stub_ipc_handle", True)
        assert all(torch.equal(a, b) for a, b in zip(original, engine.snapshot(), strict=True))
        c.end_session("q")
        assert httpx.get(f"{srv.http_url}/status").json()["cb_blend"]["stashed_sparse_locks"] == 0
        engine.close()


def _prefix_key(tokens: list[int], rid: str) -> CacheKey:
    """The ordinary retrieve key of `[0, 16)`."""
    key = bkey(tokens, rid, worker=0)
    key.end = 16
    return key
