"""Trace replay speed: recorded storage-engine calls replayed per minute on one core (target >= 1M).

Run: python benchmarks/trace_replay.py [--requests 100000] [--chunks 16] [--format text|json]

Records a synthetic serving workload through the traced storage engine and the real `.lct` recorder
(Zipf-like reuse of prompts of `--chunks` chunks: each request looks up its prompt, reads and releases
its hits, stores its misses; an eviction-loop step every 10 requests; L1 holds a tenth of the prompts),
then times, in the same run:
- the baseline: reading every frame and decoding every record's arguments, with no engine call;
- `lmcache trace replay`'s player on a fresh engine of the recorded size;
- the same on the lookup-hash log form of the workload (one JSONL line per lookup).
Prints calls per minute of each, the player's ratio to the decode-only baseline, and checks the replay's
lookup hits against the live ones. Last, the recorder's cost: the same workload on the plain storage engine
and on the traced one writing a real trace (writer thread included), in interleaved blocks, per request.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lmcache.adapters.telemetry.lookup_hash_log import LookupHashLog
from lmcache.adapters.trace.calls import HANDLERS
from lmcache.adapters.trace.lookup_log_source import lookup_log_files, play_lookup_log
from lmcache.adapters.trace.player import play
from lmcache.adapters.trace.reader import open_series
from lmcache.adapters.trace.recorder import LctTraceRecorder
from lmcache.app.replay_container import replay_engine
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.events import LookupPerformed
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.keys import ObjectKey
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController, PrefetchRequest
from lmcache.domain.session_types import PrefetchJob
from lmcache.domain.trace_hooks import TracedEvictionLoop, TracedL1Manager, TracedPrefetchController
from lmcache.domain.trace_replay import ReplaySettings

OBJ = 2 << 20
TARGET = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def record(path: Path, log_dir: Path, requests: int, chunks: int, prompts: int, objects: int) -> list[int]:
    """Run the workload through the traced engine into `path` (and the lookup-hash log); live hits."""
    clock = Clock()
    rec = LctTraceRecorder(
        path,
        config_json="",
        level_meta={"producer": "benchmark"},
        queue_size=1 << 22,
        monotonic=clock.monotonic,
    )
    log = LookupHashLog(log_dir, 10**9, 1 << 30, 10)
    rec.start()
    l1 = TracedL1Manager(ArenaAllocator(objects * OBJ, 4096), LruPolicy(), clock, tracer=rec)
    loop: EvictionLoop = TracedEvictionLoop(l1, 0.9, 0.1, tracer=rec)
    prefetch = TracedPrefetchController(l1, None, [], tracer=rec)  # type: ignore[arg-type]
    rng = random.Random(7)
    hits = []
    for i in range(requests):
        clock.now += 0.01
        prompt = int(rng.paretovariate(0.8)) % prompts if rng.random() < 0.6 else rng.randrange(prompts)
        keys = [
            ObjectKey(prompt.to_bytes(4, "big") + c.to_bytes(2, "big") * 14, "m", 1 << 24 | 1 << 8)
            for c in range(chunks)
        ]
        job = PrefetchJob()
        prefetch.run_job_now(PrefetchRequest([keys], [OBJ], 1), job)
        hit = job.result
        hits.append(hit)
        log.handle(
            LookupPerformed(f"r{i}", "m", 256, 256 * chunks, tuple(k.chunk_hash for k in keys), 0.0),
            clock.now,
        )
        for k in keys[:hit]:
            l1.extent(k)
        l1.unlock_read(keys[:hit], 1)
        extents = l1.reserve(keys[hit:], OBJ)
        l1.finish([k for k, e in zip(keys[hit:], extents, strict=True) if e is not None])
        if i % 10 == 0:
            loop.step()
        if i % 5000 == 0:
            rec._wake.set()  # keep the queue short while recording
            time.sleep(0)
    rec.close()
    log.close()
    return hits


def engine_cost(traced: bool, tmp: Path, requests: int, chunks: int, prompts: int, objects: int) -> float:
    """CPU seconds of the same workload on the plain engine, or on the traced one writing a real trace."""
    clock = Clock()
    arena = ArenaAllocator(objects * OBJ, 4096)
    rec = None
    if traced:
        path = tmp / f"cost-{time.monotonic_ns()}.lct"
        rec = LctTraceRecorder(path, config_json="", queue_size=1 << 22, monotonic=clock.monotonic)
        rec.start()
        l1: L1Manager = TracedL1Manager(arena, LruPolicy(), clock, tracer=rec)
        loop: EvictionLoop = TracedEvictionLoop(l1, 0.9, 0.1, tracer=rec)
        prefetch: PrefetchController = TracedPrefetchController(l1, None, [], tracer=rec)  # type: ignore[arg-type]
    else:
        l1 = L1Manager(arena, LruPolicy(), clock)
        loop = EvictionLoop(l1, 0.9, 0.1)
        prefetch = PrefetchController(l1, None, [])  # type: ignore[arg-type]
    rng = random.Random(11)
    prompt_keys = {}
    started = time.process_time()  # CPU of every thread (the writer's too): steadier than wall time
    for i in range(requests):
        clock.now += 0.01
        prompt = int(rng.paretovariate(0.8)) % prompts if rng.random() < 0.6 else rng.randrange(prompts)
        keys = prompt_keys.get(prompt)
        if keys is None:
            keys = prompt_keys[prompt] = [
                ObjectKey(prompt.to_bytes(4, "big") + c.to_bytes(2, "big") * 14, "m", 1 << 24 | 1 << 8)
                for c in range(chunks)
            ]
        job = PrefetchJob()
        prefetch.run_job_now(PrefetchRequest([keys], [OBJ], 1), job)
        hit = job.result
        for k in keys[:hit]:
            l1.extent(k)
        l1.unlock_read(keys[:hit], 1)
        extents = l1.reserve(keys[hit:], OBJ)
        l1.finish([k for k, e in zip(keys[hit:], extents, strict=True) if e is not None])
        if i % 10 == 0:
            loop.step()
    if rec is not None:
        rec.close()  # the writer's remaining work counts too
    return time.process_time() - started


def decode_only(path: Path) -> tuple[int, float]:
    """The baseline: read every frame and decode its arguments; (records, seconds)."""
    files = open_series([path])
    started = time.perf_counter()
    n = 0
    for f in files:
        for _, record in f.records():
            handler = HANDLERS.get(record.qualname)
            if handler is not None:
                handler[0].decode(record.args)
            n += 1
    return n, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=16, help="chunks per prompt")
    parser.add_argument("--prompts", type=int, default=20000)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    objects = args.prompts * args.chunks // 10
    out: dict[str, Any] = {"requests": args.requests, "chunks": args.chunks, "loadavg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="lmcache-trace-bench-") as tmp:
        path, log_dir = Path(tmp) / "w.lct", Path(tmp) / "log"
        t0 = time.perf_counter()
        live = record(path, log_dir, args.requests, args.chunks, args.prompts, objects)
        out["record_s"] = time.perf_counter() - t0
        out["trace_bytes"] = path.stat().st_size
        n, base_s = decode_only(path)
        engine = replay_engine(
            ReplaySettings(l1_bytes=objects * OBJ, trigger_watermark=0.9, eviction_ratio=0.1)
        )
        result = play(open_series([path]), engine)
        log_engine = replay_engine(
            ReplaySettings(
                l1_bytes=objects * OBJ, trigger_watermark=0.9, eviction_ratio=0.1, synthetic_steps=True
            )
        )
        log_result = play_lookup_log(lookup_log_files([log_dir]), log_engine, OBJ)
        cost: dict[bool, list[float]] = {False: [], True: []}
        block = max(1000, args.requests // 20)
        for r in range(6):  # interleaved blocks, alternating which goes first
            for traced in (False, True) if r % 2 == 0 else (True, False):
                cost[traced].append(engine_cost(traced, Path(tmp), block, args.chunks, args.prompts, objects))
    plain_s, traced_s = statistics.median(cost[False]), statistics.median(cost[True])
    out.update(
        recording_block_requests=block,
        engine_us_per_request=plain_s / block * 1e6,
        traced_engine_us_per_request=traced_s / block * 1e6,
        recording_us_per_request=(traced_s - plain_s) / block * 1e6,
        records=n,
        decode_only_calls_per_min=n / base_s * 60,
        replay_calls_per_min=result.calls_per_minute,
        replay_vs_decode=result.wall_s / base_s,
        replay_exact=list(engine.stats.per_lookup) == live,
        hit_rate=engine.stats.hit_rate,
        lookup_log_lookups_per_min=log_result.calls_per_minute,
        lookup_log_hit_rate=log_engine.stats.hit_rate,
    )
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return
    print(
        f"trace replay: {n} records of {args.requests} requests ({args.chunks} chunks each), "
        f"{out['trace_bytes'] / 2**20:.0f} MiB, load avg {out['loadavg']:.1f}, one core"
    )
    print(f"  baseline: read + decode only   {out['decode_only_calls_per_min'] / 1e6:6.2f} M calls/min")
    verdict = "ok" if result.calls_per_minute >= TARGET else "MISS"
    print(
        f"  lmcache trace replay player    {result.calls_per_minute / 1e6:6.2f} M calls/min "
        f"({out['replay_vs_decode']:.2f}x the baseline's time)  target >= 1 M/min {verdict}"
    )
    print(f"  replay hits == live hits: {out['replay_exact']} (hit rate {engine.stats.hit_rate:.1%})")
    print(
        f"  lookup-hash log replay         {log_result.calls_per_minute / 1e6:6.2f} M lookups/min "
        f"(hit rate {log_engine.stats.hit_rate:.1%})"
    )
    per_call = out["recording_us_per_request"] / (n / args.requests)
    print(
        f"recording cost (CPU): storage engine alone {out['engine_us_per_request']:.1f} us per request, "
        f"traced (recorder and writer thread included) {out['traced_engine_us_per_request']:.1f} us: "
        f"+{out['recording_us_per_request']:.1f} us per request, about {per_call:.2f} us per recorded call"
    )


if __name__ == "__main__":
    main()
