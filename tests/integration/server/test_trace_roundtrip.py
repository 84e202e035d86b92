"""Storage traces from a real server under load, and `lmcache trace` / `bench server --trace` on them.

`trace info` and `trace replay` reproduce the hits the live server reported, a cut trace names its
offset, `trace sweep` tabulates and plots it, and `bench server --trace` checks its own round trip.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from lmcache.adapters.trace.format import LEN
from lmcache.app.cli import main
from tests.integration.server.conftest import Engine, free_port, key, run_server, tokens_for
from tests.integration.telemetry.conftest import port_flags, sample, scrape, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.adapters.transport.client import LMCacheClient

PROMPTS = 30
MOCK_L2 = json.dumps({"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 50})


def _hit(c: LMCacheClient, tokens: list[int], rid: str) -> int:
    c.lookup(key(tokens, rid, worker=None))
    hit = c.query_prefetch_status(rid)
    if hit is None:
        hit = c.wait_prefetch_status(rid, 10.0)
    assert hit is not None
    return int(hit)


def _client_work(c: LMCacheClient, engine: Engine, seed: int, n: int, hits: list[int]) -> None:
    rng = random.Random(seed)
    blocks = list(range(engine.instance_id % 2 * 32, engine.instance_id % 2 * 32 + 32))  # 512 tokens
    for i in range(n):
        seq = int(rng.paretovariate(0.8)) % PROMPTS
        tokens = tokens_for(seq)
        rid = f"c{seed}-{i}"
        hit = _hit(c, tokens, rid)
        hits.append(hit)
        if hit:
            handle, ok = c.retrieve(key(tokens, rid, end=hit * 256), engine.instance_id, [blocks], b"", 0)
            assert handle is not None
        c.free_lookup_locks(key(tokens, rid, worker=None))
        _, ok = c.store(key(tokens, rid), engine.instance_id, [blocks])
        assert ok
        c.end_session(rid)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["trace", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("l2", "n_clients"),
    [(False, 3), (True, 1)],
    ids=["l1-only-3-clients", "mock-l2-1-client"],
)
def test_a_trace_recorded_under_load_replays_to_the_live_hits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], l2: bool, n_clients: int
) -> None:
    """Exact under concurrent clients with L1 only: every L1 change is atomic in the trace.

    With an L2, a store finishing while a lookup of the same object waits on L2 is a race the replay
    cannot see, so that variant runs one client: the deterministic workload the check is about. It also
    leaves eviction to the reserve path (watermark 1.0, never reached): a background watermark step that
    lands between a lookup's L1 check and its L2 loads is replayed in record order, before or after the
    whole lookup, and under CPU load that moved 1-2 objects between the L1 and L2 counts (the total hits
    still matched).
    """
    path = tmp_path / "load.lct"
    port = free_port()
    flags = [*port_flags(port), "--trace-level", "storage", "--trace-output", str(path)]
    # with an L2, only the reserve path evicts: see the docstring
    flags += ["--eviction-trigger-watermark", "1.0" if l2 else "0.9"]
    if l2:
        flags += ["--l2-adapter", MOCK_L2]
    hits: list[list[int]] = [[] for _ in range(n_clients)]
    lookups = 180
    with run_server(*flags, l1_gb="0.006") as srv:  # 24 objects of 256 KiB: evictions all along
        clients = [srv.client(30.0) for _ in hits]
        engines = [Engine(c, instance_id=1000 + i, seed=i) for i, c in enumerate(clients)]
        for e in engines:
            e.register()
        threads = [
            threading.Thread(target=_client_work, args=(c, e, i, lookups // n_clients, hits[i]))
            for i, (c, e) in enumerate(zip(clients, engines, strict=True))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        live = sum(map(sum, hits))
        wait_for(
            lambda: (
                sum(sample(scrape(port), "lmcache_mp_lookup_hit_tokens_total", tier=t) for t in ("l1", "l2"))
                == live * 256
            )
        )
        metrics = scrape(port)
        for c, e in zip(clients, engines, strict=True):
            c.unregister_kv_cache(e.instance_id)
            e.close()
            c.close()
    assert 0 < live < 2 * lookups, "the workload must both hit and miss"
    assert (
        sample(metrics, "lmcache_mp_l1_evictions_total", reason="on_demand")
        + sample(metrics, "lmcache_mp_l1_evictions_total", reason="watermark")
        > 0
    )
    if l2:
        assert sample(metrics, "lmcache_mp_lookup_hit_tokens_total", tier="l2") > 0

    code, out, _ = _run(capsys, "info", str(path), "--format", "json")
    info = json.loads(out)
    assert code == 0 and info["lookups"]["count"] == lookups and info["dropped_records"] == 0
    assert info["header"]["level_meta"]["chunk_size"] == 256 and info["distinct_keys"] >= 2

    code, out, _ = _run(capsys, "replay", str(path), "--format", "json")
    replay = json.loads(out)
    assert code == 0 and replay["failed"] == 0 and not replay["skipped"]
    assert replay["engine"]["l2_simulated"] is l2
    assert replay["lookups"]["count"] == lookups
    assert replay["lookups"]["hit_chunks"] == live  # exactly what the server answered, under load
    assert replay["lookups"]["chunks"] == lookups * 2  # 513 tokens: two full chunks per lookup
    if l2:
        assert replay["lookups"]["objects_from_l2"] * 256 == sample(
            metrics, "lmcache_mp_lookup_hit_tokens_total", tier="l2"
        )

    data = path.read_bytes()
    offsets, off = [], 0
    while off < len(data):
        offsets.append(off)
        off += 4 + LEN.unpack_from(data, off)[0]
    cut = tmp_path / "cut.lct"
    cut.write_bytes(data[: offsets[len(offsets) // 2] + 5])
    code, _, err = _run(capsys, "replay", str(cut))
    assert (
        code == 1 and "truncated frame: 1 of" in err and f"at byte offset {offsets[len(offsets) // 2]}" in err
    )

    plot = tmp_path / "sweep.png"
    code, out, _ = _run(
        capsys,
        "sweep",
        str(path),
        "--l1-size-gb",
        "0.003,0.006,0.05",
        "--eviction-policy",
        "LRU,noop",
        "--plot",
        str(plot),
    )
    assert code == 0 and out.count("LRU") == 3 and out.count("noop") == 3
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("LRU")]
    recorded = next(r for r in rows if r[1] == "0.006")
    assert float(recorded[3].rstrip("%")) == pytest.approx(100 * live / replay["lookups"]["chunks"], abs=0.01)
    assert plot.read_bytes().startswith(b"\x89PNG")


def _bench(url: str, mode: str, trace: Path, end: int) -> subprocess.CompletedProcess[str]:
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
    ]
    cmd += ["--kvcache-shape-spec", "(2,128,16,2,64):float16:4", "--end", str(end), "--format", "json"]
    cmd += ["--trace", str(trace)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("mode", ["lmcache_driven", "engine_driven"])
def test_bench_server_checks_its_trace_round_trip(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "bench.lct"
    rotate = ["--trace-rotation-max-size", "20000"] if mode == "engine_driven" else []  # rotated parts too
    with run_server("--trace-level", "storage", "--trace-output", str(path), *rotate, l1_gb="0.01") as srv:
        result = _bench(srv.url, mode, path, 12)
        status = httpx.get(srv.http_url + "/status", timeout=5).json()
    assert status["runtime_plugins"] == [] and status["trace"]["files"][0] == str(path)
    assert (
        status["trace"]["records"] > 24
        and status["trace"]["dropped"] == 0
        and status["trace"]["error"] is None
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trace = json.loads(result.stdout)["trace"]
    assert trace["ok"] is True and trace["live_lookups"] == 24 and trace["live_hits"] == 12 * 2
    assert trace["replayed_hits"] == trace["live_hits"] and trace["records"] > 24
    assert (len(trace["files"]) > 1) is bool(rotate)  # parts: how many depends on how records batch


def test_bench_server_reports_a_trace_that_does_not_reproduce(tmp_path: Path) -> None:
    path = tmp_path / "bench.lct"
    other = tmp_path / "other.lct"
    with run_server("--trace-level", "storage", "--trace-output", str(path), l1_gb="0.01") as srv:
        with run_server("--trace-level", "storage", "--trace-output", str(other), l1_gb="0.01") as idle:
            del idle
        result = _bench(srv.url, "lmcache_driven", other, 2)  # a trace of another (idle) server
    assert result.returncode == 1
    trace = json.loads(result.stdout)["trace"]
    assert trace["ok"] is False and "fewer than the 4 lookups" in trace["error"]
