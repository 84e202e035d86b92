"""The short versions of the chaos and fuzz tools in benchmarks/chaos, as CI runs them.

Each tool starts its own servers on loopback and prints a verdict; the long runs (10,000 ZMQ frames, 200
HTTP requests per route and mode, 20 worker kills, a 10-minute soak) are the same scripts with their
defaults, documented in the README.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[3] / "benchmarks" / "chaos"


def _run(tool: str, *args: str, timeout_s: float = 240.0) -> str:
    proc = subprocess.run(
        [sys.executable, str(TOOLS / tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "verdict: PASS" in out, out[-4000:]
    return out


@pytest.mark.slow
def test_zmq_fuzz_every_request_answered() -> None:
    assert "1000/1000 answered" in _run("fuzz_zmq.py", "--frames", "1000")


@pytest.mark.slow
def test_http_fuzz_over_every_route_finds_no_server_error() -> None:
    out = _run("fuzz_http.py", "--examples", "5")
    assert ", 0 >= 500, 0 hangs" in out and "/quota/{cache_salt}" in out and "/cache/checksums" in out


@pytest.mark.slow
def test_worker_kills_lose_no_acknowledged_store() -> None:
    assert "acknowledged stores lost 0, mismatches 0" in _run("kill_worker.py", "--rounds", "4")


@pytest.mark.slow
def test_l2_outage_is_bounded_by_the_deadlines() -> None:
    _run("l2_outage.py", "--requests", "30", "--sample", "4")


@pytest.mark.slow
def test_server_kill_with_fs_writes_in_flight_then_restart() -> None:
    out = _run("kill_server.py", "--stores", "200")
    assert "its SHM pool after the restart: gone" in out and "quarantined after its first failed read" in out


@pytest.mark.slow
def test_short_soak_stays_flat() -> None:
    _run("soak.py", "--minutes", "0.25", "--clients", "2", "--l1-gb", "0.05", "--sample-s", "3")
