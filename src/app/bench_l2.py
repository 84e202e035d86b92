"""`lmcache bench l2`: store, look up and load objects through one L2 adapter, verify them, print rates.

Usage (`python -m lmcache.app.bench_l2`; the CLI's `bench l2` sub-command is wired with `add_arguments`
on its sub-parser and `run(namespace)`)::

    lmcache bench l2 --l2-adapter '{"type": "fs", "base_path": "/tmp/l2"}' --num-keys 64 --data-size-kb 4096

The adapter is built exactly as the server builds it (validated spec, the L2 factory, the resilience
wrapper). Each round stores `--num-keys` fresh objects, looks them up, loads them back and compares
every byte; `--only` keeps one phase's numbers (the others still run when it needs their data).

`--serde JSON` (repeatable) compares the adapter without serde and with each serde given, in the same
run (bench_serde.py); `--data kv` stores KV computed by the e2e model instead of random bytes (bench_kv.py),
which is what compression and fp8 should be judged on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmcache.app.config import ConfigError
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_container import l2_adapters
from lmcache.app.l2_memory import attach_l1_memory
from lmcache.domain.keys import ObjectKey, pack_kv_rank

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ("OpStats", "add_arguments", "bench", "build_parser", "main", "run", "run_phase")

PHASES = ("store", "lookup", "load")


@dataclass
class OpStats:
    """Latencies of one op kind and the bytes it moved."""

    latencies: list[float] = field(default_factory=list)
    nbytes: int = 0
    wall_s: float = 0.0
    failures: int = 0

    def line(self, name: str) -> str:
        """`name  MiB/s  ops/s  p50  p99` for the report (binary units, as the `*_gb` flags)."""
        ops = len(self.latencies)
        lat = sorted(self.latencies) or [0.0]
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        mbps = self.nbytes / self.wall_s / (1 << 20) if self.wall_s else 0.0
        rate = ops / self.wall_s if self.wall_s else 0.0
        return (
            f"{name:<7} {mbps:10.1f} MiB/s {rate:10.1f} ops/s   p50 {p50 * 1e3:8.2f} ms   "
            f"p99 {p99 * 1e3:8.2f} ms   failures {self.failures}"
        )


async def run_phase(
    calls: Sequence[Callable[[], Awaitable[bool]]], in_flight: int, nbytes_each: int, stats: OpStats
) -> None:
    """Run `calls` with at most `in_flight` outstanding, recording latency per call."""
    gate = asyncio.Semaphore(in_flight)

    async def one(call: Callable[[], Awaitable[bool]]) -> None:
        async with gate:
            started = time.perf_counter()
            ok = await call()
            stats.latencies.append(time.perf_counter() - started)
            if ok:
                stats.nbytes += nbytes_each
            else:
                stats.failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    stats.wall_s += time.perf_counter() - started


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of `lmcache bench l2` to a (sub)parser; `run(namespace)` then runs it."""
    parser.add_argument(
        "--l2-adapter",
        required=True,
        type=json.loads,
        metavar="JSON",
        help='The adapter to measure, as for the server (e.g. {"type": "mock", ...}).',
    )
    parser.add_argument("--num-keys", type=int, default=64, metavar="N", help="Objects per round.")
    parser.add_argument("--data-size-kb", type=int, default=4096, metavar="KB", help="KiB per object.")
    parser.add_argument("--in-flight", type=int, default=8, metavar="N", help="Concurrent operations.")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="Rounds (fresh keys each).")
    parser.add_argument("--only", choices=PHASES, help="Report one phase only.")
    parser.add_argument(
        "--serde",
        action="append",
        type=json.loads,
        default=[],
        metavar="JSON",
        help='A serde to compare with no serde (repeatable), as in the adapter JSON: {"type": "zstd"}, '
        'or a chain [{"type": "fp8"}, {"type": "aesgcm", "master_key_path": "key"}].',
    )
    parser.add_argument(
        "--data",
        choices=("random", "kv"),
        default=None,
        help="Object contents: random bytes, or bfloat16 KV of the e2e model (default: kv with --serde).",
    )
    parser.add_argument(
        "--kv-model",
        choices=("bench", "test"),
        default="bench",
        help="The e2e model of --data kv: benchmarks/vllm_e2e.py's (bench) or tests/e2e_vllm's (test).",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser for `python -m lmcache.app.bench_l2`."""
    summary = (__doc__ or "").splitlines()[0]
    return add_arguments(argparse.ArgumentParser(prog="lmcache bench l2", description=summary))


async def bench(
    adapter: Any, args: argparse.Namespace, before_load: Callable[[], None] | None = None
) -> dict[str, OpStats]:
    """Run every round; returns stats per phase. Raises AssertionError when a round trip differs.

    Args:
        adapter: The adapter under test.
        args: num_keys, data_size_kb, in_flight, rounds.
        before_load: Called between the lookup and load phases (benchmarks drop page caches there).
    """
    size = args.data_size_kb * 1024
    stats = {phase: OpStats() for phase in PHASES}
    rank = pack_kv_rank(1, 0)
    # Load targets stand in for L1 extents, which are resident memory: allocated once and written before
    # every load phase (fresh zero pages would add a page fault per 4 KiB to the timed loads), page-aligned
    # as L1 extents are (--l1-align-bytes), in one arena handed to adapters that register L1 memory.
    arena = mmap.mmap(-1, max(1, size * args.num_keys))
    attach_l1_memory([adapter], _Arena(arena))
    outs = [memoryview(arena)[i * size : (i + 1) * size] for i in range(args.num_keys)]
    blank = bytes(size)
    for _ in range(args.rounds):
        run = uuid.uuid4().bytes
        keys = [ObjectKey(run + i.to_bytes(16, "big"), "bench", rank) for i in range(args.num_keys)]
        data = [memoryview(os.urandom(size)) for _ in keys]
        for out in outs:
            out[:] = blank
        await run_phase(
            [_call(adapter.store, k, d) for k, d in zip(keys, data, strict=True)],
            args.in_flight,
            size,
            stats["store"],
        )
        await run_phase([_lookup(adapter, k) for k in keys], args.in_flight, 0, stats["lookup"])
        if before_load is not None:
            before_load()
        loaded: dict[int, bool] = {}
        loads = [_call(adapter.load, k, outs[i], loaded, i) for i, k in enumerate(keys)]
        await run_phase(loads, args.in_flight, size, stats["load"])
        # A failed load is counted above; a load that says True must hold exactly the stored bytes.
        bad = sum(loaded.get(i, False) and bytes(outs[i]) != bytes(d) for i, d in enumerate(data))
        if bad:
            raise AssertionError(f"{bad} of {len(keys)} loaded objects differ from what was stored")
        await adapter.delete(keys)
    return stats


class _Arena:
    """The shape `attach_l1_memory` reads (an L1 memory's tensor) over a plain mapping."""

    def __init__(self, region: mmap.mmap) -> None:
        import numpy as np
        import torch

        self.tensor = torch.from_numpy(np.frombuffer(region, np.uint8))


def _call(
    method: Any, key: ObjectKey, view: memoryview, record: dict[int, bool] | None = None, index: int = 0
) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        ok = bool((await method([key], [view]))[0])
        if record is not None:
            record[index] = ok
        return ok

    return call


def _lookup(adapter: Any, key: ObjectKey) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        found = bool((await adapter.lookup_and_lock([key]))[0])
        await adapter.unlock([key])
        return found

    return call


async def _compare(args: argparse.Namespace) -> int:
    from lmcache.app.bench_kv import kv_objects
    from lmcache.app.bench_serde import compare_serdes, print_rows

    size = args.data_size_kb * 1024
    if (args.data or "kv") == "kv":
        data = [memoryview(b) for b in kv_objects(args.num_keys, size, args.kv_model)]
    else:
        data = [memoryview(bytearray(os.urandom(size))) for _ in range(args.num_keys)]
    rows = await compare_serdes(
        args.l2_adapter, args.serde, data, rounds=args.rounds, in_flight=args.in_flight, dtype="bfloat16"
    )
    kind = f"{args.kv_model}-model KV" if (args.data or "kv") == "kv" else "random bytes"
    print(
        f"L2 serde bench: {args.l2_adapter['type']}, {args.num_keys} x {args.data_size_kb} KiB of {kind} x "
        f"{args.rounds} rounds, {args.in_flight} in flight; ratios against no serde in the same round"
    )
    print_rows(rows, args.l2_adapter["type"])
    return 0 if not any(row.failures for row in rows) else 1


async def _main(args: argparse.Namespace) -> int:
    if args.serde:
        return await _compare(args)
    specs = L2Config.model_validate({"l2_adapter": [args.l2_adapter]}).l2_adapter
    adapter = l2_adapters(specs)[0]
    try:
        stats = await bench(adapter, args)
    finally:
        await adapter.close()
    print(
        f"L2 bench: {args.l2_adapter['type']}, {args.num_keys} x {args.data_size_kb} KiB x {args.rounds} "
        f"rounds, {args.in_flight} in flight; every object verified byte for byte"
    )
    for phase in (args.only,) if args.only else PHASES:
        print(stats[phase].line(phase))
    return 0 if not any(s.failures for s in stats.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point; returns the exit status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run with parsed flags; returns the exit status (2 for a bad adapter spec, 1 for failed operations)."""
    try:
        return asyncio.run(_main(args))
    except (ConfigError, ValueError) as exc:
        print(f"lmcache bench l2: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
