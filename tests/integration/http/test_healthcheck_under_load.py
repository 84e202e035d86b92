"""`/healthcheck` answers within 50 ms while 4 clients saturate store/retrieve (architecture.md §4, HTTP).

The clients are separate processes (each an engine with its own instance id), so the probe's latency is
the server's, not this test process's GIL.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import TYPE_CHECKING

import httpx

from tests.integration.server.conftest import Engine, hit_chunks, key, run_server, tokens_for

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

from lmcache.adapters.transport.client import LMCacheClient

CLIENTS = 4
BLOCKS = list(range(8, 40))


def _client_loop(url: str, instance_id: int, stop: Event, ops: Synchronized[int]) -> None:
    with LMCacheClient(url, 30) as client:
        engine = Engine(client, instance_id=instance_id, seed=instance_id)
        engine.register()
        seq = instance_id * 1_000_000
        while not stop.is_set():
            seq += 1
            tokens = tokens_for(seq)
            rid = f"load-{seq}"
            assert client.store(key(tokens, rid, end=512), instance_id, [BLOCKS], b"")[1]
            client.end_session(rid)
            if hit_chunks(client, tokens, f"{rid}-r") == 2:
                client.retrieve(key(tokens, f"{rid}-r", end=512), instance_id, [BLOCKS], b"", 0)
            client.end_session(f"{rid}-r")
            with ops.get_lock():
                ops.value += 2
        engine.close()


def test_healthcheck_stays_fast_while_the_data_path_is_saturated() -> None:
    ctx = multiprocessing.get_context("spawn")
    with (
        run_server("--max-workers", "2") as server,
        httpx.Client(base_url=server.http_url, timeout=5) as http,
    ):
        assert http.get("/healthcheck").status_code == 200  # warm the connection
        stop = ctx.Event()
        ops = ctx.Value("q", 0)
        procs = [
            ctx.Process(target=_client_loop, args=(server.url, 2000 + i, stop, ops), daemon=True)
            for i in range(CLIENTS)
        ]
        for proc in procs:
            proc.start()
        try:
            deadline = time.monotonic() + 60
            while ops.value < 40:  # every client is registered and storing
                assert time.monotonic() < deadline, "the load never started"
                time.sleep(0.05)
            latencies = []
            started_ops = ops.value
            for _ in range(40):
                t0 = time.perf_counter()
                reply = http.get("/healthcheck")
                latencies.append(time.perf_counter() - t0)
                assert reply.status_code == 200 and reply.json() == {"status": "healthy"}
                time.sleep(0.02)
            during = ops.value - started_ops
        finally:
            stop.set()
            for proc in procs:
                proc.join(30)
        assert all(proc.exitcode == 0 for proc in procs), server.log()
    assert during > 0  # the data path kept working while the probes ran
    latencies.sort()
    p90 = latencies[int(len(latencies) * 0.9) - 1]
    assert statistics.median(latencies) < 0.05 and p90 < 0.05, latencies
