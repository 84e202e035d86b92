"""The installed `lmcache` operator commands and `lmcache bench server --url` against a real server.

One server (HTTP frontend on a free loopback port) serves the whole module; each test uses its own salts,
tokens, models and instance ids so the order does not matter.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.integration.server.conftest import Engine, free_port, hit_chunks, key, run_server, tokens_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.server.conftest import RunningServer

LMCACHE = str(Path(sys.executable).with_name("lmcache"))
GIB = 2**30
BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 32 blocks of 16


@dataclass
class HttpServer:
    """A running server and the URL of its HTTP frontend."""

    server: RunningServer
    url: str


@contextlib.contextmanager
def http_server(*flags: str) -> Iterator[HttpServer]:
    """A server with its HTTP frontend on a free loopback port, once `/healthcheck` answers 200."""
    port = free_port()
    with run_server("--http-host", "127.0.0.1", "--http-port", str(port), *flags) as server:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/healthcheck never answered 200:\n{server.log()}")
            time.sleep(0.1)
        yield HttpServer(server, url)


@pytest.fixture(scope="module")
def running() -> Iterator[HttpServer]:
    with http_server() as server:
        yield server


def lmcache(*argv: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an operator runs it."""
    return subprocess.run([LMCACHE, *argv], capture_output=True, text=True, timeout=60, check=False)


def ok_json(*argv: str) -> Any:
    result = lmcache(*argv, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def ok_terminal(*argv: str) -> str:
    result = lmcache(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_ping(running: HttpServer) -> None:
    assert ok_json("ping", "kvcache", "--url", running.url) == {"status": "healthy"}
    assert ok_terminal("ping", "kvcache", "--url", running.url).startswith(
        f"kvcache at {running.url}: healthy"
    )


def test_describe_shows_a_registered_worker(running: HttpServer) -> None:
    with running.server.client() as c:
        engine = Engine(c, instance_id=4242, model="describe-model")
        engine.register()
        try:
            status = ok_json("describe", "kvcache", "--url", running.url)
            text = ok_terminal("describe", "kvcache", "--url", running.url)
        finally:
            c.unregister_kv_cache(4242)
            engine.close()
    assert status["is_healthy"] is True
    assert status["chunk_size"] == 256
    l1 = status["storage_manager"]["l1_manager"]
    assert 0 < l1["memory_total_bytes"] <= 0.05 * GIB
    assert 0 <= l1["memory_usage_ratio"] <= 1
    worker = status["cache_context_meta"]["4242"]
    assert worker["model_name"] == "describe-model" and worker["world_size"] == 1
    assert worker["kv_cache_layout"]["num_layers"] == 2 and worker["kv_cache_layout"]["num_blocks"] == 64
    for expected in ("healthy", "256", "LRU", "4242", "describe-model", "64"):
        assert expected in text, (expected, text)


@pytest.mark.parametrize("fmt", ["terminal", "json"])
def test_kvcache_clear_empties_l1(running: HttpServer, fmt: str) -> None:
    seq = {"terminal": 101, "json": 102}[fmt]
    with running.server.client() as c:
        engine = Engine(c, instance_id=5000 + seq)
        engine.register()
        try:
            tokens = tokens_for(seq)
            assert c.store(key(tokens, f"s{seq}", end=512), 5000 + seq, [BLOCKS], b"")[1]
            c.end_session(f"s{seq}")
            before = ok_json("describe", "kvcache", "--url", running.url)
            assert before["storage_manager"]["l1_manager"]["total_object_count"] >= 2
            result = lmcache("kvcache", "clear", "--url", running.url, "--format", fmt)
            assert result.returncode == 0, result.stderr
            if fmt == "json":
                answer = json.loads(result.stdout)
                assert answer["status"] == "ok" and answer["cleared"] == {"tier": "l1"}
            else:
                assert result.stdout.startswith(f"kvcache at {running.url}: cleared tier l1 (ok")
            assert hit_chunks(c, tokens, f"after-clear-{seq}") == 0
            c.end_session(f"after-clear-{seq}")
            after = ok_json("describe", "kvcache", "--url", running.url)
            assert after["storage_manager"]["l1_manager"]["total_object_count"] == 0
        finally:
            c.unregister_kv_cache(5000 + seq)
            engine.close()


def test_quota_round_trip_json(running: HttpServer) -> None:
    url = ("--url", running.url)
    assert ok_json("quota", "set", "tenant-json", "--limit-gb", "0.03", *url) == {
        "cache_salt": "tenant-json",
        "limit_gb": 0.03,
        "status": "ok",
    }
    assert "larger than L1" in ok_json("quota", "set", "tenant-json", "--limit-gb", "1.5", *url)["warning"]
    got = ok_json("quota", "get", "tenant-json", *url)
    assert got["cache_salt"] == "tenant-json" and got["limit_gb"] == 1.5 and got["exists"] is True
    assert got["current_usage_gb"] == 0.0
    assert ok_json("quota", "list", *url)["users"]["tenant-json"]["limit_gb"] == 1.5
    assert ok_json("quota", "delete", "tenant-json", *url) == {
        "cache_salt": "tenant-json",
        "status": "removed",
    }
    assert ok_json("quota", "delete", "tenant-json", *url)["status"] == "not_found"
    assert "tenant-json" not in ok_json("quota", "list", *url)["users"]


def test_quota_default_salt_and_terminal(running: HttpServer) -> None:
    url = ("--url", running.url)
    assert "2.000 GiB" in ok_terminal("quota", "set", "", "--limit-gb", "2", *url)
    text = ok_terminal("quota", "get", "_default", *url)
    assert "_default" in text and "2.000 GiB" in text and "yes" in text
    assert "_default" in ok_terminal("quota", "list", *url)
    assert ok_terminal("quota", "delete", "_default", *url) == "Quota for cache salt _default: removed\n"
    warned = " ".join(ok_terminal("quota", "set", "", "--limit-gb", "3", *url).split())
    assert "Warning" in warned and "larger than L1" in warned  # the server's L1 is 0.05 GiB
    ok_terminal("quota", "delete", "_default", *url)


def test_non_http_port_fails_with_one_line(running: HttpServer) -> None:
    """The ZMQ port speaks no HTTP: a one-line failure, no traceback."""
    zmq_url = running.server.url.replace("tcp://", "http://")
    result = lmcache("ping", "kvcache", "--url", zmq_url, "--timeout", "2")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("lmcache: ") and result.stderr.count("\n") == 1, result.stderr


def test_unreachable_server_fails_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = lmcache("describe", "kvcache", "--url", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"lmcache: cannot reach {url}: connection refused\n"


def _bench(rpc_url: str, http_url: str, first_seq: int) -> dict[str, Any]:
    """Four lmcache-driven passes; a short --interval lets each store commit before the warm lookup."""
    result = lmcache(
        "bench",
        "server",
        "--rpc-url",
        rpc_url,
        "--url",
        http_url,
        "--transfer-mode",
        "lmcache_driven",
        "--kvcache-shape-spec",
        "(2,128,16,2,64):float16:4",
        "--start",
        str(first_seq),
        "--end",
        str(first_seq + 4),
        "--interval",
        "0.05",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_bench_server_checksums_through_the_api(running: HttpServer) -> None:
    """Every pass's digests come from POST /cache/checksums and match the engine's own bytes."""
    summary = _bench(running.server.url, running.url, 0)
    assert summary["checksum_ok"] is True and summary["failures"] == []
    assert summary["checksums"] == {"server": 4, "local": 0}


def test_bench_server_falls_back_to_local_checksums_without_http(running: HttpServer) -> None:
    """The control for the test above: with nothing at --url, the same run computes digests locally."""
    summary = _bench(running.server.url, f"http://127.0.0.1:{free_port()}", 10)
    assert summary["checksum_ok"] is True
    assert summary["checksums"] == {"server": 0, "local": 4}
