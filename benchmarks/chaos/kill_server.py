"""Chaos: the server SIGKILLed (with its resource tracker) while fs L2 writes are in flight, then restarted.

Run: python benchmarks/chaos/kill_server.py [--stores 300] [--seed 1]

An engine stores requests as fast as it can into a server with an fs L2 tier; after a random 0.5-2 s the
whole server process group gets SIGKILL, as an OOM kill or a container's power loss would do it, so
nothing unlinks the server's SHM pool. A second server starts on the same fs directory. Checks:

- the first server's SHM pool (`/dev/shm/lmcache_l1_pool_<pid>_<hex>`) is gone after the second start;
- the fs tier's temp files are cleaned and every object the second server finds is served byte-exact
  (stores in flight at the kill are either whole or absent), counting how many acknowledged stores
  survived in L2;
- an object file damaged on disk is quarantined after its first failed read: a miss, moved to
  `.quarantine/`, gone from `/l2/keys`, counted once in `/status`, never read again.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Engine, ServerProcess


def pools_of(pid: int) -> list[str]:
    """The automatic SHM pools named after `pid`."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"lmcache_l1_pool_{pid}_*"))


def store_until_killed(engine: Engine, count: int, acked: list[int]) -> None:
    """Store sequences 0..count-1, recording the acknowledged ones, until the server dies."""
    for seq in range(count):
        try:
            if engine.store(seq):
                acked.append(seq)
        except Exception:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="lmcache-kill-fs-"))
    l2 = json.dumps({"type": "fs", "base_path": str(base)})
    first = ServerProcess("--l2-adapter", l2, l1_gb=0.5).start()
    engine = Engine(first.zmq_url, 3000, timeout_s=5.0)
    engine.register()
    acked: list[int] = []
    writer = threading.Thread(target=store_until_killed, args=(engine, args.stores, acked), daemon=True)
    writer.start()
    time.sleep(rng.uniform(0.5, 2.0))
    pools_before = pools_of(first.pid)
    first.kill(signal.SIGKILL, group=True)
    writer.join(30)
    engine.close(unregister=False)
    leftover = pools_of(first.pid)

    second = ServerProcess("--l2-adapter", l2, l1_gb=0.5).start()
    try:
        pools_after = pools_of(first.pid)
        checker = Engine(second.zmq_url, 3000)
        checker.register()
        outcomes = {seq: checker.check(seq) for seq in sorted(set(acked))}
        survived = sum(o == "hit" for o in outcomes.values())
        mismatches = sum(o == "mismatch" for o in outcomes.values())
        temp_left = [p.name for p in (base / ".tmp").iterdir()]
        quarantined = damage_and_read(second, checker, base, outcomes)
        checker.close()
    finally:
        second.stop()
    print(f"kill server: SIGKILL after {len(acked)} acknowledged stores; fs L2 at {base}")
    print(f"SHM pool of the killed server: {pools_before}; left by the kill: {leftover}")
    print(f"its SHM pool after the restart: {pools_after or 'gone'}")
    print(
        f"after restart: {survived}/{len(acked)} acknowledged stores found in L2, {mismatches} mismatches, "
        f"{len(temp_left)} temp files left"
    )
    print(f"damaged object: {quarantined}")
    ok = (
        bool(pools_before) and not pools_after and mismatches == 0 and not temp_left and survived > 0
        and quarantined.startswith("quarantined")
    )  # fmt: skip
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def damage_and_read(server: ServerProcess, engine: Engine, base: Path, outcomes: dict[int, str]) -> str:
    """Flip a byte of one object file, read it twice; how the server dealt with it."""
    present = [seq for seq, outcome in outcomes.items() if outcome == "hit"]
    if not present:
        return "nothing to damage"
    engine.client.clear(True)  # the next lookup must load from L2
    files = sorted(p for p in base.glob("??/*.kv"))
    victim = files[0]
    blob = bytearray(victim.read_bytes())
    blob[-1] ^= 0xFF
    victim.write_bytes(blob)
    results = [engine.check(seq) for seq in present] + [engine.check(seq) for seq in present]
    status = httpx.get(server.http_url + "/status", timeout=10).json()["storage_manager"]["l2_adapters"][0]
    listed = httpx.get(server.http_url + "/l2/keys", params={"page_size": 10000}, timeout=10).json()["keys"]
    moved = list((base / ".quarantine").glob("*")) if (base / ".quarantine").exists() else []
    if "mismatch" in results:
        return "MISMATCH served"
    if (
        status["quarantined_objects"] != 1
        or status["corrupt_objects"] != 1
        or len(moved) != 1
        or victim.exists()
    ):
        return f"NOT quarantined: status {status}, moved {moved}, victim exists {victim.exists()}"
    return (
        f"quarantined after its first failed read ({len(listed)} keys listed of {len(files)} files, "
        f"corrupt counted {status['corrupt_objects']}x over two reads, moved to {moved[0].parent.name}/)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
