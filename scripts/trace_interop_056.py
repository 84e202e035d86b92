#!/usr/bin/env python3
"""Storage traces between the published LMCache 0.5.6 server and ours, both ways.

Not a test (CI has no 0.5.6): run it with this repository's python, pointing at a scratch virtualenv
that has `lmcache==0.5.6` installed OUTSIDE the repository:

    DO_NOT_TRACK=1 LMCACHE_TRACK_USAGE=false .venv/bin/python scripts/trace_interop_056.py \
        --ours .venv/bin/lmcache --theirs /work/venv056/bin/lmcache [--requests 20] [--keep DIR]

1. 0.5.6 records (`--trace-level storage`) while our client drives it like an engine (cold lookup, store,
   a pause for 0.5.6's commit after its reply, warm lookup, retrieve); then our `lmcache trace info` and
   `lmcache trace replay` read its file, and the replay's lookups must hit what 0.5.6 answered live.
2. Our server records the same workload; then 0.5.6's `lmcache trace info` must read our file and count
   the same records as ours (0.5.6's replay skips our calls: it knows only its own StorageManager's).
The script prints both checks and exits 1 if either fails; `--keep DIR` keeps both trace files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the shared server launcher
from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo
from server_process import ServerProcess

ENV = dict(os.environ, DO_NOT_TRACK="1", LMCACHE_TRACK_USAGE="false", LMCACHE_DISABLE_BANNER="1")
SHAPE = (2, 256, 16, 8, 128)
LAYERS = 4


def _key(tokens: list[int], rid: str, worker: int | None, end: int) -> CacheKey:
    return CacheKey("interop-model", 1, worker, tokens, 0, end, rid, "", None, 1)


def _poll(client: LMCacheClient, rid: str) -> int:
    for _ in range(200):
        hit = client.query_prefetch_status(rid)
        if hit is not None:
            return int(hit)
        time.sleep(0.02)
    raise RuntimeError(f"lookup {rid} never finished")


def drive(binary: str, trace: Path, log: Path, requests: int) -> list[int]:
    """Start `binary server` recording into `trace`, run the workload, stop it; the live lookup hits."""
    server = ServerProcess(
        "--trace-level",
        "storage",
        "--trace-output",
        str(trace),
        l1_gb="0.1",
        command=(binary, "server"),
        env=ENV,
        log_level=None,
        log_path=log,
    ).start(wait=False)
    layers = [SharedKVTensor(torch.randn(SHAPE).half()) for _ in range(LAYERS)]
    hits: list[int] = []
    try:
        deadline = time.monotonic() + 120
        ready = re.compile(r"cache server is running|Uvicorn running on")
        while not ready.search(server.log()):
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} server did not start; see {log}")
            time.sleep(0.2)
        time.sleep(1.0)
        with LMCacheClient(server.url, 30.0) as client:
            groups = [EngineGroupInfo(0, tuple(range(LAYERS)), 16)]
            client.register_kv_cache(
                7, [t.descriptor for t in layers], "interop-model", 1, "vllm", {"kv_layout": "NHD"}, groups
            )
            for seq in range(requests):
                tokens = [seq % 7] + [100 + seq % 5] * 511 + [seq] * 257  # shared prefixes across requests
                end = len(tokens) // 256 * 256
                blocks = [list(range((seq % 4) * 48, (seq % 4) * 48 + end // 16))]
                for phase in ("cold", "warm"):
                    rid = f"{phase}-{seq}"
                    client.lookup(_key(tokens, rid, None, end))
                    hit = _poll(client, rid)
                    hits.append(hit)
                    if phase == "cold":
                        client.free_lookup_locks(_key(tokens, rid, None, end))
                        client.store(_key(tokens, rid, 0, end), 7, blocks, b"")
                        time.sleep(0.3)  # 0.5.6 commits a store after its reply
                    elif hit:
                        client.retrieve(_key(tokens, rid, 0, hit * 256), 7, blocks, b"", 0)
                        client.free_lookup_locks(_key(tokens, rid, None, end))
                    client.end_session(rid)
            client.unregister_kv_cache(7)
    finally:
        server.stop(timeout_s=60)
        for t in layers:
            t.close()
    return hits


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A command's result, with 0.5.6's log lines left out of stdout's copy in messages."""
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600, check=False)


def main() -> int:
    """Run both checks; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True, help="Our `lmcache` executable.")
    parser.add_argument("--theirs", required=True, help="The 0.5.6 `lmcache` executable.")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep", default=None, help="Directory to copy both traces into.")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="lmcache-trace-interop-") as tmp:
        theirs, ours = Path(tmp) / "recorded-by-056.lct", Path(tmp) / "recorded-by-ours.lct"

        live = drive(args.theirs, theirs, Path(tmp) / "056.log", args.requests)
        info = run([args.ours, "trace", "info", str(theirs), "--format", "json"])
        replay = run([args.ours, "trace", "replay", str(theirs), "--format", "json"])
        ok = info.returncode == 0 and replay.returncode == 0
        doc = json.loads(replay.stdout) if ok else {}
        replayed = doc.get("lookups", {}).get("hit_chunks")
        print(
            f"1. 0.5.6 recorded {json.loads(info.stdout)['records'] if ok else '?'} records; our replay: "
            f"{replayed} chunks hit, 0.5.6 answered {sum(live)} live over {len(live)} lookups"
        )
        if not ok or replayed != sum(live):
            failures += 1
            print(info.stderr + replay.stderr)

        ours_live = drive(args.ours, ours, Path(tmp) / "ours.log", args.requests)
        their_info = run([args.theirs, "trace", "info", str(ours)])
        our_info = run([args.ours, "trace", "info", str(ours), "--format", "json"])
        counted = re.search(r"total_records:\s+(\d+)", their_info.stdout)
        ours_count = json.loads(our_info.stdout)["records"] if our_info.returncode == 0 else None
        print(
            f"2. ours recorded {ours_count} records ({sum(ours_live)} chunks hit live); 0.5.6's trace info "
            f"counts {counted.group(1) if counted else '?'} (exit {their_info.returncode})"
        )
        if their_info.returncode != 0 or counted is None or int(counted.group(1)) != ours_count:
            failures += 1
            print(their_info.stdout[-2000:] + their_info.stderr[-2000:])
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for p in (theirs, ours):
                shutil.copy(p, Path(args.keep) / p.name)
    print("traces interoperate" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
