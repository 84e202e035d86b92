"""Fleet matching (cacheblend.md §7): a blend server whose match source is a real coordinator.

A store publishes its whole range (chunk 0 included) to `/blend/fingerprints`; lookups then take their
candidates from `/blend/match` (so chunk 0, which the local index never holds, is found), with the local
index as the fallback when the coordinator is gone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from lmcache.domain.hashing import TokenHasher
from tests.integration.coordinator.conftest import wait_until
from tests.integration.server.blend_rig import CS, BlendEngine, S, bkey
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.coordinator.conftest import CoordinatorProcess

H = [h.hex() for h in TokenHasher(CS).chunk_hashes(S)]


def test_fleet_directory_is_the_match_source_with_local_fallback(
    coordinator: Callable[..., CoordinatorProcess],
) -> None:
    coord = coordinator(blend_chunk_size=CS, health_check_interval=0, eviction_check_interval=0)
    flags = (
        "--engine-type",
        "blend",
        "--chunk-size",
        str(CS),
        "--coordinator-url",
        coord.url,
        "--coordinator-heartbeat-interval",
        "0.2",
        "--coordinator-blend-timeout",
        "2",
        "--coordinator-blend-match-concurrency",
        "2",
    )
    with run_server(*flags) as srv, srv.client() as c:
        engine = BlendEngine(c, zeros=True)
        engine.register()
        assert c.store(bkey(S, "s", worker=0), 1000, [[1, 2, 3]])[1]
        wait_until(lambda: coord.get("/directory/stats").get("blend_entries") == 3)
        # chunk 0 is only in the fleet directory: found through the coordinator
        result, _ = engine.blend.cb_unified_lookup(bkey([5, 5, 5, *S[0:16]], "fleet"))
        assert [(m.old_st, m.cur_st, m.hash.hex()) for m in result.non_prefix_segments] == [(0, 3, H[0])]
        status = httpx.get(f"{srv.http_url}/status").json()["cb_blend"]
        assert status["fleet"] and status["fleet_fallbacks"] == 0
        # the coordinator goes away: the next lookup matches locally
        coord.stop()
        started = time.monotonic()
        result, _ = engine.blend.cb_unified_lookup(bkey([7] * 5 + S[16:48], "local"))
        assert time.monotonic() - started < 5
        assert [(m.old_st, m.cur_st) for m in result.non_prefix_segments] == [(16, 5), (32, 21)]
        assert httpx.get(f"{srv.http_url}/status").json()["cb_blend"]["fleet_fallbacks"] == 1
        metrics = httpx.get(f"{srv.http_url}/metrics").text
        assert 'lmcache_mp_cb_lookups_total{source="fleet"} 1.0' in metrics
        assert 'lmcache_mp_cb_lookups_total{source="fleet_fallback"} 1.0' in metrics
        engine.close()
