"""L1 pages are backed after readiness, off the request path, and `/status` reports it honestly."""

from __future__ import annotations

import httpx
import pytest

from lmcache.domain.units import gb_to_bytes
from tests.integration.http.frontend import wait_for
from tests.integration.server.conftest import run_server


def _l1(http: httpx.Client) -> dict[str, object]:
    status = http.get("/status").json()
    l1: dict[str, object] = status["storage_manager"]["l1_manager"]
    return l1


@pytest.mark.parametrize(
    ("mode", "backing"), [("auto", "shm"), ("lmcache_driven", "anonymous")], ids=["shm-pool", "anonymous"]
)
def test_arena_is_backed_in_the_background_and_reported(mode: str, backing: str) -> None:
    size = gb_to_bytes(0.25)
    with (
        run_server("--supported-transfer-mode", mode, l1_gb="0.25") as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
    ):
        assert _l1(http)["memory_backing"] == backing

        def backed() -> bool:
            return _l1(http)["memory_populated_bytes"] == size

        wait_for(backed, timeout_s=30)
        l1 = _l1(http)
        rss = l1["process_rss_bytes"]
        assert isinstance(rss, int)
        # populated pages are mapped in this process, SHM ones included (RssShmem), so RSS covers them
        assert rss >= size, f"RSS {rss} does not cover the {size}-byte arena that was backed"
        assert l1["memory_total_bytes"] == size


def test_start_up_objects_are_frozen_out_of_the_collector() -> None:
    """A full GC must not walk torch and the object graph (50-300 ms of stopped threads per collection)."""
    with (
        run_server() as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
    ):
        gc_view = http.get("/status").json()["python_gc"]
        assert gc_view["frozen_objects"] > 50_000
        assert len(gc_view["collections"]) == 3
