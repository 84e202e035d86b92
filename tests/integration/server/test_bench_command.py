"""`lmcache bench server` against a real server, in both transfer modes; a mismatch exits 1.

It can be rerun against the same server (its own keys per run), leaves no lock behind on any path, and
finds the server's HTTP frontend for server-side checksums from `--rpc-url`'s host and `--http-port`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.integration.server.conftest import RunningServer, run_server

SPEC = "(2,128,16,2,64):float16:4"


def _bench(
    server: RunningServer, mode: str, *extra: str, url: bool = True
) -> subprocess.CompletedProcess[str]:
    http_port = server.http_url.rsplit(":", 1)[1]
    cmd = [
        sys.executable,
        "-m",
        "lmcache.app.cli",
        "bench",
        "server",
        "--rpc-url",
        server.url,
        "--transfer-mode",
        mode,
        "--kvcache-shape-spec",
        SPEC,
        "--num-tokens",
        "512",
        "--start",
        "0",
        "--end",
        "4",
        "--format",
        "json",
        *(["--http-port", http_port] if url else []),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _locks(server: RunningServer) -> tuple[int, int, int]:
    l1 = httpx.get(f"{server.http_url}/status", timeout=10).json()["storage_manager"]["l1_manager"]
    return l1["read_locked_object_count"], l1["read_lock_count"], l1["write_locked_object_count"]


@pytest.mark.parametrize("mode", ["lmcache_driven", "engine_driven"])
def test_bench_passes_byte_exact(mode: str) -> None:
    with run_server() as server:
        result = _bench(server, mode)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["checksum_ok"] is True and summary["failures"] == []
    assert summary["ops"]["store"]["count"] == 4 and summary["ops"]["retrieve"]["count"] == 4
    assert summary["ops"]["store"]["gib_per_s"] > 0
    if mode == "lmcache_driven":  # --url derived from --rpc-url's host and --http-port
        assert summary["checksums"] == {"server": 4, "local": 0} and summary["checksums_note"] is None
    else:
        assert summary["checksums"] == {"server": 0, "local": 4}
        assert "--transfer-mode lmcache_driven" in summary["checksums_note"]


@pytest.mark.parametrize("mode", ["lmcache_driven", "engine_driven"])
def test_bench_reruns_against_one_server_and_leaves_no_lock(mode: str) -> None:
    with run_server() as server:
        runs = [_bench(server, mode) for _ in range(3)]
        locks = _locks(server)
    summaries = [json.loads(r.stdout) for r in runs]
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stdout for r in runs]
    assert len({s["run_id"] for s in summaries}) == 3  # a fresh run id, hence fresh keys, per run
    assert all(
        s["server_locks_after"] == {"read_locked_objects": 0, "read_locks": 0, "write_locked_objects": 0}
        for s in summaries
    )
    assert locks == (0, 0, 0)


@pytest.mark.parametrize("mode", ["lmcache_driven", "engine_driven"])
def test_repeated_run_id_is_explained_and_its_locks_freed(mode: str) -> None:
    with run_server() as server:
        assert _bench(server, mode, "--run-id", "c0ffee").returncode == 0
        again = _bench(server, mode, "--run-id", "c0ffee")  # same keys: the cold lookups now hit
        locks = _locks(server)
    assert again.returncode == 1
    failures = json.loads(again.stdout)["failures"]
    assert len(failures) == 4
    assert failures[0].startswith("seq 0: cold lookup hit 2 of 2 chunks, expected a miss")
    assert "run id 00c0ffee: it was used against this server before" in failures[0]
    assert locks == (0, 0, 0)  # without the fix the cold lookups' locks stayed for --l1-read-ttl-seconds


def test_text_output_says_where_checksums_came_from() -> None:
    with run_server() as server:
        found = _bench(server, "lmcache_driven", "--format", "text")
        missing = _bench(server, "lmcache_driven", "--format", "text", "--http-port", "1")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "checksums: 4 by the server, 0 computed locally\n" in found.stdout
    assert "server locks after the run (all clients): 0 read-locked objects, 0 write-locked" in found.stdout
    assert missing.returncode == 0
    assert (
        "checksums: 0 by the server, 4 computed locally (http://127.0.0.1:1 did not answer" in missing.stdout
    )
    assert "pass --url or --http-port" in missing.stdout


def test_bench_help_shows_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lmcache.app.cli", "bench", "server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text = " ".join(out.split())
    for shown in (
        "(default: tcp://localhost:5555)",
        "(default: 8080)",
        "(default: http://<host of --rpc-url>:<--http-port>)",
        "(default: auto)",
        "(default: 512)",
        "(default: (2,1024,16,8,128):float16:32)",
        "(default: 20)",
        "(default: 10.0)",
        "Default: a random id, printed.",
    ):
        assert shown in text, shown
