"""`lmcache bench server` against a real server, in both transfer modes; a mismatch exits 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.server.conftest import run_server

SPEC = "(2,128,16,2,64):float16:4"


def _bench(url: str, mode: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "lmcache.app.cli",
        "bench",
        "server",
        "--rpc-url",
        url,
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
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("mode", ["lmcache_driven", "engine_driven"])
def test_bench_passes_byte_exact(mode: str) -> None:
    with run_server() as server:
        result = _bench(server.url, mode)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["checksum_ok"] is True and summary["failures"] == []
    assert summary["ops"]["store"]["count"] == 4 and summary["ops"]["retrieve"]["count"] == 4


def test_bench_exits_1_when_checks_fail() -> None:
    with run_server() as server:
        assert _bench(server.url, "lmcache_driven").returncode == 0
        again = _bench(server.url, "lmcache_driven")  # same sequences: the cold lookups now hit
    assert again.returncode == 1
    assert "cold lookup was not a full miss" in again.stdout
