"""Soak: K engines store and retrieve against one server for N minutes; the server's memory must stay flat.

Run: python benchmarks/chaos/soak.py --minutes 10 --clients 4 [--l1-gb 1] [--sample-s 5]

Starts `lmcache server --l1-size-gb L1` and K fake CPU engines (threads, one client and one registered KV
cache each). Each engine loops over a working set of requests larger than its share of L1 (so eviction
runs all the time): half stores, half lookup + retrieve, every hit checked byte for byte. The server's
RSS (VmRSS: its private memory plus the L1 pages it touched) is sampled every `--sample-s` seconds and
printed as a curve, then L1 is cleared and sampled once more.

Verdict (exit 0 only when all hold): 0 errors (every request answered), 0 mismatches, the RSS growth over
the run (peak minus the idle server before traffic) within L1 + 100 MB, the private memory (RssAnon: all
but the L1 pool and mapped files) within 100 MB of the idle server's, and no growth in the last half (its
peak at most 16 MiB above its first sample). The absolute RSS is printed too: the idle process alone
(Python, torch) holds about 260 MiB before any traffic.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CHUNK_BYTES, TOKENS, Engine, ServerProcess

MB = 1_000_000
MIB = 1 << 20
FLAT_SLACK = 16 * MIB


@dataclass
class Tally:
    """What the engines saw."""

    stores: int = 0
    store_failures: int = 0
    hits: int = 0
    misses: int = 0
    mismatches: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def client_loop(url: str, index: int, working_set: int, deadline: float, tally: Tally, seed: int) -> None:
    """One engine's traffic until `deadline`."""
    rng = random.Random(seed * 1000 + index)
    engine = Engine(url, 1000 + index, timeout_s=30.0)
    try:
        engine.register()
        while time.monotonic() < deadline:
            seq = rng.randrange(working_set)
            try:
                if rng.random() < 0.5:
                    ok = engine.store(seq)
                    tally.add(stores=1, store_failures=0 if ok else 1)
                else:
                    outcome = engine.check(seq)
                    tally.add(
                        hits=outcome == "hit", misses=outcome == "miss", mismatches=outcome == "mismatch"
                    )
            except Exception as exc:  # a request without an answer (timeout) or a broken client
                tally.add(errors=1)
                with tally.lock:
                    tally.examples.append(f"engine {index}: {exc!r}"[:200])
    finally:
        engine.close()


def verdict(
    samples: list[tuple[float, int, int]], idle_pair: tuple[int, int], l1_bytes: int, tally: Tally
) -> tuple[bool, list[str]]:
    """The module docstring's criteria over (t, rss, private) samples; (passed, one line per criterion)."""
    idle, idle_private = idle_pair
    peak = max(rss for _, rss, _ in samples)
    private_growth = max(private for _, _, private in samples) - idle_private
    private_ok = private_growth <= 100 * MB
    half = samples[len(samples) // 2 :]
    last_half_growth = max(rss for _, rss, _ in half) - half[0][1]
    growth_ok = peak - idle <= l1_bytes + 100 * MB
    flat_ok = last_half_growth <= FLAT_SLACK
    clean = tally.errors == 0 and tally.mismatches == 0 and tally.store_failures == 0
    lines = [
        f"RSS growth over the run: {(peak - idle) / MIB:.0f} MiB (peak {peak / MIB:.0f} MiB, idle "
        f"{idle / MIB:.0f} MiB); limit L1 + 100 MB = {(l1_bytes + 100 * MB) / MIB:.0f} MiB: "
        f"{'ok' if growth_ok else 'EXCEEDED'}",
        f"private memory (RssAnon) growth: {private_growth / MIB:.0f} MiB (limit 100 MB): "
        f"{'ok' if private_ok else 'EXCEEDED'}",
        f"growth in the last half: {last_half_growth / MIB:+.1f} MiB (limit {FLAT_SLACK / MIB:.0f} MiB): "
        f"{'flat' if flat_ok else 'GROWING'}",
        f"errors {tally.errors}, mismatches {tally.mismatches}, failed stores {tally.store_failures}: "
        f"{'ok' if clean else 'FAILED'}",
    ]
    return growth_ok and private_ok and flat_ok and clean, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--l1-gb", type=float, default=1.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    l1_bytes = int(args.l1_gb * (1 << 30))
    request_bytes = CHUNK_BYTES * TOKENS // 256
    working_set = max(8, int(2 * l1_bytes / request_bytes / args.clients))  # twice L1 over all engines
    server = ServerProcess(l1_gb=args.l1_gb).start()
    tally = Tally()
    samples: list[tuple[float, int, int]] = []
    try:
        time.sleep(1.0)
        idle = server.rss_bytes(), server.rss_bytes("RssAnon")
        started = time.monotonic()
        deadline = started + args.minutes * 60
        threads = [
            threading.Thread(
                target=client_loop,
                args=(server.zmq_url, i, working_set, deadline, tally, args.seed),
                daemon=True,
            )
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        print(
            f"soak: {args.clients} engines x {working_set} requests of {request_bytes / MIB:.1f} MiB, "
            f"L1 {args.l1_gb:g} GB, {args.minutes:g} min; idle server RSS {idle[0] / MIB:.0f} MiB, "
            f"private {idle[1] / MIB:.0f} MiB",
            flush=True,
        )
        while time.monotonic() < deadline:
            time.sleep(min(args.sample_s, max(0.0, deadline - time.monotonic())))
            at, rss, private = time.monotonic() - started, server.rss_bytes(), server.rss_bytes("RssAnon")
            samples.append((at, rss, private))
            print(
                f"  t={at:6.0f} s  rss={rss / MIB:7.1f} MiB  private={private / MIB:6.1f} MiB  "
                f"stores={tally.stores} hits={tally.hits} "
                f"misses={tally.misses} mismatches={tally.mismatches} errors={tally.errors}",
                flush=True,
            )
        for thread in threads:
            thread.join(120)
        httpx.post(server.http_url + "/cache/clear", json={"tier": "l1", "force": True}, timeout=30)
        time.sleep(2.0)
        cleared = server.rss_bytes()
        l1 = server.status()["storage_manager"]["l1_manager"]
        alive = server.alive() and server.healthy()
    finally:
        server.stop()
    used = l1["memory_used_bytes"] / MIB
    print(f"after a forced L1 clear: rss={cleared / MIB:.1f} MiB (L1 used {used:.1f} MiB)")
    passed, lines = verdict(samples, idle, l1_bytes, tally)
    for line in lines:
        print(line)
    for example in tally.examples[:5]:
        print("  ", example)
    passed = passed and alive and tally.stores > 0 and tally.hits > 0
    print(f"server alive: {alive}; stores {tally.stores}, hits {tally.hits}, misses {tally.misses}")
    print("verdict:", "PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
