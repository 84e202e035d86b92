"""Informational routes over real HTTP (banner, health, status, config, version, metrics, threads).

Also: a clear start-up error when the HTTP port is taken.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from benchmarks.server_process import ServerProcess

from lmcache import __version__
from lmcache.domain.units import gb_to_bytes
from tests.integration.http.frontend import detail, frontend, wait_for
from tests.integration.server.conftest import CHUNK_BYTES, key, run_server, tokens_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend


@pytest.fixture(scope="module")
def fe() -> Iterator[Frontend]:
    with frontend("--instance-id", "srv-under-test") as running:
        yield running


def test_banner_version_and_unknown_route(fe: Frontend) -> None:
    banner = fe.http.get("/").json()
    assert banner["service"] == "lmcache server" and banner["instance_id"] == "srv-under-test"
    assert fe.http.get("/version").json() == {"version": __version__, "engine_type": "MPCacheServer"}
    missing = fe.http.get("/no/such/route")
    assert missing.status_code == 404 and "detail" in missing.json()


def test_healthcheck_is_healthy(fe: Frontend) -> None:
    reply = fe.http.get("/healthcheck")
    assert reply.status_code == 200
    assert reply.json() == {"status": "healthy"}


def test_status_has_the_fields_describe_reads(fe: Frontend) -> None:
    fe.http.post("/clear-cache")
    fe.store(1)
    status = fe.http.get("/status").json()
    assert status["is_healthy"] is True
    assert status["engine_type"] == "MPCacheServer"
    assert status["chunk_size"] == 256 and status["hash_algorithm"] == "blake3"
    assert status["active_sessions"] == 0  # store ended its session
    l1 = status["storage_manager"]["l1_manager"]
    assert l1["memory_total_bytes"] == pytest.approx(gb_to_bytes(0.05), rel=0.01)
    assert l1["memory_used_bytes"] == 2 * CHUNK_BYTES and l1["total_object_count"] == 2
    assert l1["memory_usage_ratio"] == pytest.approx(2 * CHUNK_BYTES / l1["memory_total_bytes"])
    assert (l1["read_locked_object_count"], l1["read_lock_count"], l1["write_locked_object_count"]) == (
        0,
        0,
        0,
    )
    fe.zmq.lookup(key(tokens_for(1), "held", worker=None, end=512))
    wait_for(lambda: fe.zmq.query_prefetch_status("held") is not None)
    held = fe.http.get("/status").json()["storage_manager"]["l1_manager"]
    assert (held["read_locked_object_count"], held["read_lock_count"]) == (2, 2)  # until retrieve or free
    fe.zmq.free_lookup_locks(key(tokens_for(1), "held", worker=None, end=512))
    fe.zmq.end_session("held")
    freed = fe.http.get("/status").json()["storage_manager"]["l1_manager"]
    assert (freed["read_locked_object_count"], freed["read_lock_count"]) == (0, 0)
    eviction = status["storage_manager"]["eviction_controller"]
    assert eviction == {
        "eviction_policy": "LRU",
        "trigger_watermark": 0.8,
        "eviction_ratio": 0.2,
        "thread_alive": True,
    }
    assert status["storage_manager"]["store_controller"]["thread_alive"] is True
    assert status["storage_manager"]["prefetch_controller"]["policy"] == "default"
    assert status["storage_manager"]["l2_adapters"] == []
    assert status["registered_gpu_ids"] == [1000]
    meta = status["cache_context_meta"]["1000"]
    assert meta["model_name"] == "m" and meta["world_size"] == 1
    layout = meta["kv_cache_layout"]
    assert layout["num_layers"] == 2 and layout["num_blocks"] == 64
    assert layout["cache_size_per_token"] == CHUNK_BYTES // 256
    (group,) = layout["kernel_groups"]
    assert group["layer_indices"] == [0, 1] and group["tokens_per_block"] == 16
    assert group["dtype"] == "torch.float16" and group["is_mla"] is False
    assert group["engine_kv_shape"] == [2, 64, 16, 2, 64]
    assert group["engine_kv_concrete_shape"] == "2 x [2, 64, 16, 2, 64]"
    assert group["engine_kv_format"] == "NL_X_TWO_NB_BS_NH_HS"
    assert status["worker_liveness"]["1000"]["has_pinged"] is False
    assert status["kv_events"]["enabled"] is True and status["kv_events"]["log_depth"] >= 1
    assert set(status["loops"]) >= {"eviction", "l1_ttl_reaper", "session_expiry", "l2_store"}


def test_config_reports_the_effective_values(fe: Frontend) -> None:
    config = fe.http.get("/config").json()
    assert config["mp"]["instance_id"] == "srv-under-test"
    assert config["l1"]["l1_size_gb"] == 0.05 and config["l1"]["eviction_policy"] == "LRU"
    assert config["http"]["http_host"] == "127.0.0.1"
    assert config["http"]["enable_run_script"] is False


def test_threads_lists_loops_and_named_threads(fe: Frontend) -> None:
    threads = fe.http.get("/threads").json()
    assert threads["loops"]["eviction"]["alive"] is True
    names = {t["name"] for t in threads["threads"]}
    assert {"lmcache-zmq", "lmcache-http", "lmcache-storage", "lmcache-eviction"} <= names


def test_metrics_serve_prometheus_text_that_moves(fe: Frontend) -> None:
    def stores() -> float:
        reply = fe.http.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        lines = [ln for ln in reply.text.splitlines() if ln.startswith("lmcache_mp_store_requests_total ")]
        return float(lines[0].split()[1]) if lines else 0.0

    time.sleep(0.2)  # events of earlier tests' requests reach the metrics within the bus's batch window
    before = stores()
    fe.store(2)
    wait_for(lambda: stores() >= before + 1)  # events reach the metrics through the bus thread
    time.sleep(0.2)
    assert stores() == before + 1


def test_metrics_answer_503_when_disabled() -> None:
    with run_server("--disable-metrics") as server:
        reply = httpx.get(f"{server.http_url}/metrics", timeout=10)
        assert reply.status_code == 503
        assert "metrics disabled" in detail(reply)
        assert httpx.get(f"{server.http_url}/healthcheck", timeout=10).status_code == 200


def test_http_port_in_use_is_a_start_up_error_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flags = ("--http-port", str(port), "--disable-metrics", "--shm-name", "")
        server = ServerProcess(*flags).start(wait=False)
        code = server.wait_exit(60)
    log = server.log()
    assert code == 2, log
    assert f"--http-host/--http-port: cannot bind 127.0.0.1:{port}" in log
    assert "Traceback" not in log
    assert "LMCache cache server stopped" in log  # what started was undone
