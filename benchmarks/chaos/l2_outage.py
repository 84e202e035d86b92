"""Chaos: the L2 backend (a real redis-server) frozen with SIGSTOP, thawed, then SIGKILLed and restarted.

Run: python benchmarks/chaos/l2_outage.py [--requests 60] [--sample 8] [--deadline-s 1]

The server runs a small L1 over a `resp` L2 tier with a `--deadline-s` lookup/load deadline and twice that
for stores (the per-adapter `lookup_deadline_s` / `store_deadline_s`), so most lookups need L2. One engine
stores `--requests` requests, then in each phase (healthy, frozen, thawed, killed, restarted) clears L1
and looks up, retrieves and stores a sample of them, timing every operation. Checks: every request is
answered (no client timeout), none takes longer than the store deadline plus 3 s of slack,
/healthcheck answers within a second throughout, no retrieve is ever byte-inexact, and once Redis is back
(thawed, or restarted empty and refilled) the tier serves hits again after the circuit breaker's probe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Engine, ServerProcess, free_port


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on loopback (no persistence), waited for."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("l2_outage needs redis-server on PATH (Debian: apt-get install redis-server)")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            return proc
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


class Phase:
    """Operations of one phase: counts, the slowest, health answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ops = self.hits = self.misses = self.mismatches = self.errors = 0
        self.slowest = 0.0
        self.unhealthy = 0

    def line(self) -> str:
        return (
            f"{self.name:9} ops={self.ops:3} hits={self.hits:3} misses={self.misses:3} "
            f"mismatches={self.mismatches} unanswered={self.errors} slowest={self.slowest:.2f} s "
            f"slow-healthchecks={self.unhealthy}"
        )


def run_phase(phase: Phase, server: ServerProcess, engine: Engine, seqs: list[int]) -> None:
    """Look up + retrieve each sequence, then store it again, timing each; probe /healthcheck between."""
    for seq in seqs:
        for op in ("check", "store"):
            started = time.monotonic()
            try:
                if op == "check":
                    outcome = engine.check(seq)
                    phase.hits += outcome == "hit"
                    phase.misses += outcome == "miss"
                    phase.mismatches += outcome == "mismatch"
                else:
                    engine.store(seq)
            except Exception:
                phase.errors += 1
            phase.ops += 1
            phase.slowest = max(phase.slowest, time.monotonic() - started)
        try:
            probe = time.monotonic()
            httpx.get(server.http_url + "/healthcheck", timeout=2).raise_for_status()
            phase.unhealthy += time.monotonic() - probe > 1.0
        except httpx.HTTPError:
            phase.unhealthy += 1


def wait_closed(server: ServerProcess, engine: Engine, timeout_s: float) -> float:
    """Poke the tier (a lookup lets the breaker probe) until its breaker is closed; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        breaker = server.status()["storage_manager"]["l2_adapters"][0]["circuit_breaker"]
        if breaker == "closed":
            break
        engine.check(10_000)
        time.sleep(0.5)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--sample", type=int, default=8, help="requests touched per phase")
    parser.add_argument("--deadline-s", type=float, default=1.0)
    args = parser.parse_args()
    port = free_port()
    redis_proc = start_redis(port)
    spec = {
        "type": "resp",
        "host": "127.0.0.1",
        "port": port,
        "lookup_deadline_s": args.deadline_s,
        "store_deadline_s": 2 * args.deadline_s,
    }
    server = ServerProcess("--l2-adapter", json.dumps(spec), l1_gb=0.02).start()
    engine = Engine(server.zmq_url, 5000, timeout_s=30.0)
    phases: list[Phase] = []
    try:
        engine.register()
        for seq in range(args.requests):
            engine.store(seq)
        time.sleep(1.0)  # the store controller pushes to Redis
        sample = list(range(0, args.requests, max(1, args.requests // args.sample)))[: args.sample]
        steps = [
            ("healthy", None),
            ("frozen", lambda: redis_proc.send_signal(signal.SIGSTOP)),
            ("thawed", lambda: redis_proc.send_signal(signal.SIGCONT)),
            ("killed", lambda: (redis_proc.kill(), redis_proc.wait(10))),
        ]
        for name, action in steps:
            if action is not None:
                action()
            if name == "thawed":
                time.sleep(2.0)  # past the breaker's first backoff: its probe closes it
            phase = Phase(name)
            engine.client.clear(True)  # every lookup of the phase has to ask L2
            run_phase(phase, server, engine, sample)
            phases.append(phase)
        redis_proc = start_redis(port)  # empty: the restarted tier has to be filled again
        recovered = wait_closed(server, engine, 60.0)
        engine.client.clear(True)  # L1 still holds the sample: store it anew so it reaches the new tier
        for seq in sample:
            engine.store(seq)
        time.sleep(1.0)
        engine.client.clear(True)
        refill = Phase("restarted")
        run_phase(refill, server, engine, sample)
        phases.append(refill)
        alive = server.alive() and server.healthy()
    finally:
        engine.close()
        server.stop()
        redis_proc.send_signal(signal.SIGCONT)
        redis_proc.kill()
        redis_proc.wait(10)
    limit = 2 * args.deadline_s + 3.0
    deadlines = f"{args.deadline_s:g} s (lookup/load) and {2 * args.deadline_s:g} s (store)"
    print(f"l2 outage: resp tier, deadlines {deadlines}")
    for phase in phases:
        print("  " + phase.line())
    bad = [p for p in phases if p.errors or p.mismatches or p.slowest > limit or p.unhealthy]
    served_after = phases[2].hits > 0 and phases[4].hits > 0  # thawed, restarted: L2 hits again
    print(f"server alive {alive}; L2 hits after the thaw and the restart: {served_after}")
    print(f"slowest operation allowed {limit:g} s; breaker closed {recovered:.1f} s after the restart")
    ok = alive and not bad and served_after
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
