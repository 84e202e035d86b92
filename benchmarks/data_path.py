"""Serving data-path benchmark: a real server's store/retrieve GB/s and lookup latency, against baselines.

Run: python benchmarks/data_path.py [--quick] [--variants] [--layers 32] [--format text|json]

Starts `lmcache server` on a free 127.0.0.1 port, registers a CPU KV cache of the default bench shape
`(2,1024,16,8,128):float16:32` (one POSIX SHM segment per layer, NHD, one engine group) and measures the
store and retrieve op round trips (new tokens every iteration so every store moves bytes), each next to a
single-thread memcpy of the same bytes timed right after it, in two phases: first touch (8192-token
requests right after start-up and registration, every request's time shown) and steady state (after the
arena was written once; 512- and 8192-token requests over one ascending block range, as a fresh engine
allocates, and over scattered block ids; target >= 0.8x memcpy); then lookup round-trip p50/p99 (target
p50 < 300 us) next to a plain pyzmq DEALER/ROUTER echo. `--variants` compares, in-process, the server's
per-chunk gather/scatter (`CpuKVTransfer`) with a batched variant (one gather per layer plane over all
chunks into a staging buffer, then one copy per chunk) and with `index_copy_` over an 8-byte view of the
rows.
`--trace-overhead` instead runs two servers side by side, one recording `--trace-level storage`, and
interleaves the same store/lookup/retrieve rounds on both (alternating which goes first), over
`--sessions` fresh pairs; it prints the median times of each and the recorder's overhead, the median of
the paired on/off ratios (target < 3%); `--control` repeats it with two untraced servers, the noise floor.

This file is the CLI and the report; the pieces: `data_path_engine.py` (the bench shape, KV layers in SHM,
keys), `data_path_ops.py` (the server phases), `data_path_trace.py` (`--trace-overhead`),
`data_path_variants.py` (`--variants`), `bench_timing.py` (medians, memcpy) and `server_process.py` (the
server launcher the tests share).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_path_engine import (
    BLOCK_SIZE,
    CHUNK,
    HEAD_SIZE,
    HEADS,
    INSTANCE,
    NUM_BLOCKS,
    REQUEST_TOKENS,
    Engine,
    request_bytes,
)
from data_path_ops import bench_echo, bench_lookup, bench_transfer, spawn_server, warm_arena
from data_path_trace import bench_trace_overhead, print_overhead
from data_path_variants import bench_variants
from lmcache.adapters.transport.client import LMCacheClient

if TYPE_CHECKING:
    from server_process import ServerProcess

TARGET_RATIO = 0.8  # issue 17: steady-state store and retrieve at >= 0.8x a single-thread memcpy


def print_table(result: dict[str, Any]) -> None:
    """The plain-text report."""
    cfg = result["config"]
    print(
        f"data path: {cfg['layers']} layers x [2, {NUM_BLOCKS}, {BLOCK_SIZE}, {HEADS}, {HEAD_SIZE}] "
        f"float16, chunk {CHUNK}, L1 {cfg['l1_size_gb']:.2f} GiB, {os.cpu_count()} CPUs, server torch "
        f"threads {cfg['server_threads'] or 'default'}, load avg {cfg['loadavg']:.1f}, "
        f"server up in {cfg['server_start_s']:.1f} s"
    )
    print(
        f"first store after the first-touch phase, into an arena never written (8192 tokens, warm-up): "
        f"{result['cold_store_gbps']:.2f} GB/s"
    )
    print()
    print(
        f"{'phase':<12}{'blocks':<11}{'op':<9}{'tokens':>7}{'MiB':>6}{'iters':>6}{'ms p50':>8}{'ms max':>8}"
        f"{'GB/s':>7}{'memcpy 1t':>10}{'ratio':>7}  target >= {TARGET_RATIO}x (steady)"
    )
    for row in result["transfer"]:
        for op in ("store", "retrieve"):
            ratio = row[f"{op}_ratio"]
            verdict = ("ok" if ratio >= TARGET_RATIO else "MISS") if row["phase"] == "steady" else ""
            print(
                f"{row['phase']:<12}{row['blocks']:<11}{op:<9}{row['tokens']:>7}{row['bytes'] / 2**20:>6.0f}"
                f"{row['iterations']:>6}{row[f'{op}_ms']:>8.1f}{max(row[f'{op}_all_ms']):>8.1f}"
                f"{row[f'{op}_gbps']:>7.2f}{row['memcpy_gbps']:>10.2f}{ratio:>6.2f}x  {verdict}"
            )
    first = [row for row in result["transfer"] if row["phase"] == "first-touch"]
    for row in first:
        print(f"first-touch requests, ms: store {row['store_all_ms']}, retrieve {row['retrieve_all_ms']}")
    lk = result["lookup"]
    print()
    print(f"round trips ({lk['lookups']} lookups of 512 tokens, 1 reader)  p50 us  p99 us")
    lines = (
        ("lookup (LMCacheClient)", "lookup"),
        ("lookup + query_prefetch_status", "lookup_query"),
        ("lookup (raw DEALER, no client thread)", "lookup_raw_dealer"),
        ("noop (LMCacheClient)", "noop"),
        ("noop (raw DEALER)", "noop_raw_dealer"),
        ("baseline: pyzmq DEALER/ROUTER echo", "echo"),
    )
    for label, name in lines:
        verdict = ""
        if name == "lookup":
            verdict = f"  target p50 < 300 us {'ok' if lk['lookup_p50_us'] < 300 else 'MISS'}"
        print(f"  {label:<40}{lk[f'{name}_p50_us']:>7.0f}{lk[f'{name}_p99_us']:>8.0f}{verdict}")
    if lk["wrong_hit_counts"]:
        print(f"  ({lk['wrong_hit_counts']} lookups reported a wrong hit count)")
    if result.get("variants"):
        print()
        mib = result["transfer"][-1]["bytes"] / 2**20
        print(f"in-process CPU transfer of one 8192-token request ({mib:.0f} MiB), GB/s:")
        print(
            f"{'op':<9}{'threads':>8}{'per-chunk':>11}{'batched':>9}{'per-chunk int64':>17}{'memcpy 1t':>11}"
        )
        for row in result["variants"]:
            wide = f"{row['per_chunk_int64_gbps']:.2f}" if "per_chunk_int64_gbps" in row else "-"
            print(
                f"{row['op']:<9}{row['threads']:>8}{row['per_chunk_gbps']:>11.2f}{row['batched_gbps']:>9.2f}"
                f"{wide:>17}{row['memcpy_1t_gbps']:>11.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="4 layers, fewer iterations and lookups (< 30 s)")
    add("--variants", action="store_true", help="also compare gather/scatter variants in-process")
    add("--layers", type=int, default=None, help="KV layers (default 32; 4 with --quick)")
    add("--iterations", type=int, default=None, help="timed 8192-token requests (default 5; 4 quick)")
    add("--lookups", type=int, default=None, help="timed lookups (default 2000; 500 quick)")
    add(
        "--server-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the server (default: unset, torch uses one thread per core)",
    )
    add("--server-arg", action="append", default=[], help="extra flag for the server (repeatable)")
    add(
        "--trace-overhead",
        action="store_true",
        help="compare store/retrieve with --trace-level storage off and on (two servers, interleaved)",
    )
    add("--sessions", type=int, default=2, help="--trace-overhead: fresh server pairs (default 2)")
    add("--control", action="store_true", help="--trace-overhead: also measure two untraced servers")
    add("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    layers = args.layers or (4 if args.quick else 32)
    iters = args.iterations or (4 if args.quick else 5)
    lookups = args.lookups or (500 if args.quick else 2000)
    big = request_bytes(REQUEST_TOKENS[-1], layers)
    l1_gib = max(0.25, 2 * big / 2**30 + 0.25)  # two large requests and some room

    result: dict[str, Any] = {}
    if args.trace_overhead:
        with tempfile.TemporaryDirectory(prefix="lmcache-bench-") as tmp:
            engine = Engine(layers)
            try:
                result["config"] = {"layers": layers, "l1_size_gb": l1_gib, "loadavg": os.getloadavg()[0]}
                rounds = args.iterations or (6 if args.quick else 12)
                result["trace_overhead"] = bench_trace_overhead(
                    engine, layers, l1_gib, rounds, Path(tmp), args.server_arg, args.sessions, args.control
                )
            finally:
                engine.close()
        print(json.dumps(result, indent=2)) if args.format == "json" else print_overhead(result)
        return
    with tempfile.TemporaryDirectory(prefix="lmcache-bench-") as tmp:
        engine = Engine(layers)
        server: ServerProcess | None = None
        try:
            server = spawn_server(l1_gib, Path(tmp) / "server.log", args.server_threads, args.server_arg)
            start_s = server.wait_ready()
            result["config"] = {
                "layers": layers,
                "l1_size_gb": l1_gib,
                "iterations": iters,
                "server_threads": args.server_threads,
                "server_start_s": start_s,
                "loadavg": os.getloadavg()[0],
            }
            with LMCacheClient(server.url, timeout_s=120.0) as client:
                engine.register(client)
                if client.get_chunk_size() != CHUNK:
                    raise RuntimeError("the server's chunk size is not 256")
                # first touch: right after start-up and registration, as an engine's first requests
                result["transfer"] = [
                    bench_transfer(client, engine, 8192, layers, iters, True, "first-touch")
                ]
                result["cold_store_gbps"] = warm_arena(client, engine, int(l1_gib * 2**30), layers)
                result["transfer"] += [
                    bench_transfer(client, engine, n, layers, iters if n == 8192 else 3 * iters, contiguous)
                    for contiguous in (True, False)
                    for n in REQUEST_TOKENS
                ]
                result["lookup"] = bench_lookup(client, server.url, engine, lookups)
                client.unregister_kv_cache(INSTANCE)
            result["lookup"].update(bench_echo(lookups))
            result["config"]["server_exit_code"] = server.stop()
            server = None
            if args.variants:
                result["variants"] = bench_variants(engine, layers, 3)
        finally:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
            engine.close()
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
