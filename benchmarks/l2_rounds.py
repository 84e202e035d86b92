"""The measuring core of benchmarks/l2.py, shared with l2_backends.py.

Adapter and raw rounds alternate on the same target; medians, per-round ratios and the table row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
from typing import TYPE_CHECKING, Any

from lmcache.app.bench_l2 import OpStats, bench, run_phase
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_container import l2_adapters

if TYPE_CHECKING:
    from pathlib import Path


def mbps(stats: OpStats) -> float:
    return stats.nbytes / stats.wall_s / 1e6 if stats.wall_s else 0.0


def drop_cache(directory: Path) -> None:
    """Evict a directory's files from the page cache, so the next reads come from the disk."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


async def adapter_round(adapter: Any, args: argparse.Namespace) -> tuple[float, float]:
    ns = argparse.Namespace(
        num_keys=args.num_keys, data_size_kb=args.size_mb * 1024, in_flight=args.in_flight, rounds=1
    )
    base = getattr(adapter, "base", None)
    cold = (lambda: drop_cache(base)) if args.cold and base is not None else None
    stats = await bench(adapter, ns, cold)
    return mbps(stats["store"]), mbps(stats["load"])


async def compare(spec: dict[str, Any], raw_round: Any, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Alternate adapter and raw rounds (disks and shared servers drift); medians of the per-round rates."""
    adapter = l2_adapters(L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter)[0]
    ours, raw = [], []
    try:
        for i in range(args.rounds):
            if i % 2:
                raw.append(await raw_round())
                ours.append(await adapter_round(adapter, args))
            else:
                ours.append(await adapter_round(adapter, args))
                raw.append(await raw_round())
    finally:
        await adapter.close()

    def med(rows: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)

    def paired(op: int) -> float:
        return statistics.median(o[op] / r[op] for o, r in zip(ours, raw, strict=True) if r[op])

    return med(ours), med(raw), (paired(0), paired(1))


async def raw_phases(
    args: argparse.Namespace, put: Any, get: Any, cold: Path | None = None
) -> tuple[float, float]:
    size = args.size_mb << 20
    store, load = OpStats(), OpStats()
    for _ in range(1):
        names = [uuid.uuid4().hex for _ in range(args.num_keys)]
        data = [os.urandom(size) for _ in names]
        puts = [bind(put, n, d) for n, d in zip(names, data, strict=True)]
        await run_phase(puts, args.in_flight, size, store)
        if cold is not None:
            drop_cache(cold)
        await run_phase([bind(get, n, size, i) for i, n in enumerate(names)], args.in_flight, size, load)
    return mbps(store), mbps(load)


def bind(fn: Any, *a: Any) -> Any:
    async def call() -> bool:
        await fn(*a)
        return True

    return call


def print_row(name: str, rates: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]) -> None:
    adapter, raw, ratio = rates
    for i, op in enumerate(("store", "load")):
        print(f"| {name:<7} | {op:<5} | {adapter[i]:10.1f} | {raw[i]:10.1f} | {ratio[i]:5.2f}x |")
