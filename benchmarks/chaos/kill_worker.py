"""Chaos: engine workers SIGKILLed mid-store and mid-retrieve; no acknowledged store lost, nothing leaked.

Run: python benchmarks/chaos/kill_worker.py [--rounds 20] [--seed 1]

Starts `lmcache server` with short lock TTLs and a fast worker reaper. Each round starts a fake engine in
its own process (harness.py worker), lets it store (even rounds) or look up and retrieve what earlier rounds
stored (odd rounds), and SIGKILLs it after a random 50-500 ms, mid-request as often as not. Then:

- the server is alive and healthy and answered everything the survivors asked;
- every store a killed worker saw acknowledged is served byte-exact afterwards (L1 is large enough that
  nothing is evicted, so a miss is a lost store);
- the dead workers are reaped, their sessions ended, and their locks and reservations expire, so L1
  holds only ready, unlocked objects again. A lookup names no worker (a scheduler sends it), so the
  session of a lookup whose process died before its retrieve is left to the session TTL: at most one
  per killed reader is allowed.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Engine, ServerProcess, remove_segments

HERE = Path(__file__).resolve().parent
FLAGS = (
    "--l1-write-ttl-seconds", "3", "--l1-read-ttl-seconds", "3",
    "--worker-reap-timeout-seconds", "1", "--worker-registration-grace-seconds", "2",
)  # fmt: skip


def run_round(
    url: str, instance: int, first: int, mode: str, kill_after: float
) -> tuple[list[int], list[str]]:
    """One worker process, killed `kill_after` s after it registered; (acknowledged stores, check results)."""
    cmd = [sys.executable, str(HERE / "harness.py"), "worker", url, str(instance), str(first), "200", mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready"):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(60)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reader.join(30)
    stored, checks, segments = [], [], []
    for line in lines:
        word, *rest = line.split()
        if word == "stored":
            stored.append(int(rest[0]))
        elif word == "checked":
            checks.append(rest[1])
        elif word == "segments":
            segments = rest
    remove_segments(segments)  # the engine owns its KV segments; a killed one cannot unlink them
    return stored, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    server = ServerProcess(*FLAGS, l1_gb=0.5).start()
    acked: dict[int, list[int]] = {}
    mismatched_live = 0
    try:
        for n in range(args.rounds):
            instance = 2000 + (n // 2) * 2  # odd rounds read what the round before stored
            mode = "store" if n % 2 == 0 else "retrieve"
            stored, checks = run_round(server.zmq_url, instance, 0, mode, rng.uniform(0.05, 0.5))
            acked.setdefault(instance, []).extend(stored)
            mismatched_live += checks.count("mismatch")
            if not server.alive():
                break
        alive, healthy = server.alive(), server.healthy()
        time.sleep(4.0)  # the reaper (2 s grace) and the lock TTLs (3 s) have run
        status = server.status()
        lost = mismatched = 0
        for instance, seqs in acked.items():
            engine = Engine(server.zmq_url, instance)
            engine.register()
            for seq in sorted(set(seqs)):
                outcome = engine.check(seq)
                lost += outcome == "miss"
                mismatched += outcome == "mismatch"
            engine.close()
        objects = httpx.get(
            server.http_url + "/cache/objects", params={"page_size": 10000}, timeout=10
        ).json()
        held = [o for o in objects["objects"] if o["state"] != "ready" or o["readers"]]
    finally:
        exit_status = server.stop()
    total = sum(len(set(s)) for s in acked.values())
    print(f"kill worker: {args.rounds} workers SIGKILLed mid-request, {total} acknowledged stores")
    print(f"server alive {alive}, healthy {healthy}, exit status after SIGTERM {exit_status}")
    print(f"acknowledged stores lost {lost}, mismatches {mismatched + mismatched_live}")
    print(
        f"after reaping: registered workers {len(status['cache_context_meta'])}, active sessions "
        f"{status['active_sessions']}, locked or half-written L1 objects {len(held)}"
    )
    ok = (
        alive and healthy and exit_status == 0 and lost == 0 and mismatched + mismatched_live == 0
        and not status["cache_context_meta"] and status["active_sessions"] <= args.rounds // 2 and not held
        and total > 0
    )  # fmt: skip
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
