"""Clients that die, workers that go silent, L1 pressure, concurrency and shutdown."""

from __future__ import annotations

import re
import threading
import time

import httpx
import torch

from tests.integration.server.conftest import Engine, hit_chunks, key, run_server, tokens_for

BLOCKS = list(range(8, 40))


def test_client_dying_between_lookup_and_retrieve() -> None:
    with run_server("--l1-read-ttl-seconds", "1") as server:
        with server.client() as c:
            engine = Engine(c)
            engine.register()
            assert c.store(key(tokens_for(31), "s", end=512), 1000, [BLOCKS], b"")[1]
            engine.close()
        dying = server.client()
        assert hit_chunks(dying, tokens_for(31), "gone") == 2  # objects now read-locked
        dying.close()  # ... and the client never retrieves
        with server.client() as c:
            c.clear(False)
            assert hit_chunks(c, tokens_for(31), "check") == 2  # still locked: clear kept them
            c.free_lookup_locks(key(tokens_for(31), "check", worker=None, end=512))
            time.sleep(1.5)  # the dead client's locks expire
            c.clear(False)
            assert hit_chunks(c, tokens_for(31), "after") == 0  # memory returned


def test_silent_worker_is_reaped() -> None:
    flags = ("--worker-reap-timeout-seconds", "0.4", "--worker-registration-grace-seconds", "0.8")
    with run_server(*flags) as server, server.client() as c:
        pinger, silent = Engine(c, 1000), Engine(c, 1001, seed=1)
        pinger.register()
        silent.register()
        assert c.ping(1000)
        time.sleep(0.3)
        assert c.ping(1000)
        time.sleep(0.3)
        assert c.ping(1000)
        assert c.store(key(tokens_for(32), "a", end=512), 1001, [BLOCKS], b"")[1]  # within the grace
        time.sleep(1.3)
        assert c.store(key(tokens_for(33), "b", end=512), 1001, [BLOCKS], b"") == (b"", False)  # reaped
        assert c.store(key(tokens_for(33), "b", end=512), 1000, [BLOCKS], b"") == (b"", False)  # reaped too
        pinger.close()
        silent.close()
        server.wait_for_log(re.escape("Reaped silent worker 1001"))
        # The reaped worker's request ("a") does not linger in active_sessions until the session TTL.
        server.wait_for_log(r"Ended 1 session\(s\) of instance 1001")
        status = httpx.get(server.http_url + "/status", timeout=10).json()
        assert status["active_sessions"] == 0


def test_lru_pressure_never_fails_a_store() -> None:
    # 0.003 GB = ~3.2 MB of L1 = 12 chunks of 256 KiB; 40 stores of 2 chunks each.
    with run_server(l1_gb="0.003") as server, server.client() as c:
        engine = Engine(c)
        engine.register()
        for seq in range(40):
            assert c.store(key(tokens_for(100 + seq), f"s{seq}", end=512), 1000, [BLOCKS], b"")[1]
            assert hit_chunks(c, tokens_for(100 + seq), f"l{seq}") == 2  # the newest is always there
            c.free_lookup_locks(key(tokens_for(100 + seq), f"l{seq}", worker=None, end=512))
        assert hit_chunks(c, tokens_for(100), "oldest") == 0  # evicted
        engine.close()


def test_eight_concurrent_clients_round_trip_byte_exact() -> None:
    errors: list[str] = []
    with run_server(l1_gb="0.1") as server:

        def worker(n: int) -> None:
            try:
                with server.client() as c:
                    engine = Engine(c, 3000 + n, seed=n)
                    engine.register()
                    for seq in range(5):
                        tokens = [n * 1000 + seq] + [9906] * 512
                        blocks = list(range(seq * 8, seq * 8 + 32))
                        before = engine.blocks(blocks)
                        rid = f"{n}-{seq}"
                        assert c.store(key(tokens, rid, end=512), 3000 + n, [blocks], b"")[1]
                        engine.zero(blocks)
                        assert hit_chunks(c, tokens, rid + "w") == 2
                        assert c.retrieve(key(tokens, rid + "w", end=512), 3000 + n, [blocks], b"", 0)[1]
                        after = engine.blocks(blocks)
                        if not all(torch.equal(a, b) for a, b in zip(before, after, strict=True)):
                            errors.append(f"client {n} seq {seq}: bytes differ")
                    engine.close()
            except Exception as exc:
                errors.append(f"client {n}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == []


def test_start_up_names_the_device_as_the_quick_start_shows() -> None:
    # The CPU-only quick start's expected line; CI machines have no GPU.
    with run_server() as server:
        line = server.wait_for_log(r"torch_dev=\S.*")
    if not torch.cuda.is_available():
        assert line.startswith("torch_dev=StubCPUDevice(device_type=cpu), L1 0.05 GiB"), line
