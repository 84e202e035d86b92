"""`lmcache trace sweep`: one input replayed over L1 sizes x eviction policies, in parallel processes.

Every configuration is checked before any process starts (a bad value exits 2 naming its flag). Each
replay runs in its own process (spawned: no fork of a threaded parent), reading the input itself, so
the parent holds only the result rows. The table lists hit rate, byte hit rate, evictions and peak
usage per configuration; `--plot PNG` draws hit rate against L1 size, one line per policy, with
matplotlib (the `plot` extra; without it the command says which extra to install and exits 2).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.app.config.errors import ConfigError
from lmcache.app.trace_run import Source, open_source, overrides_of, replay_one, settings_for

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from lmcache.domain.trace_replay import ReplaySettings

__all__ = ("run_sweep", "sweep_row", "write_plot")


def sweep_row(job: tuple[Source, ReplaySettings, float, bool]) -> dict[str, Any]:
    """Replay one configuration (in a worker process); its table row."""
    source, settings, size_gb, allow_truncated = job
    engine, result = replay_one(source, settings, allow_truncated)
    s = engine.stats
    return {
        "eviction_policy": settings.eviction_policy,
        "l1_size_gb": size_gb,
        "lookups": s.lookups,
        "hit_rate": s.hit_rate,
        "byte_hit_rate": s.byte_hit_rate,
        "evicted_objects": s.evicted_objects,
        "evicted_bytes": s.evicted_bytes,
        "peak_used_bytes": s.peak_used_bytes,
        "failed_records": result.failed,
        "replay_seconds": result.wall_s,
        "records": result.records,
    }


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; returns the exit status (ConfigError and TraceError propagate to `run_trace`)."""
    source = open_source(args.inputs, args.chunk_bytes)
    overrides = overrides_of(args)
    policies = overrides.pop("eviction_policy", None)
    if policies is None:  # the recorded one (an error naming --eviction-policy when there is none)
        policies = [
            settings_for(source, {**overrides, "l1_size_gb": args.l1_size_gb[0]}, args.no_l2).eviction_policy
        ]
    jobs = []
    for policy in policies:
        for size in args.l1_size_gb:
            settings = settings_for(
                source, {**overrides, "l1_size_gb": size, "eviction_policy": policy}, args.no_l2
            )
            jobs.append((source, settings, size, args.allow_truncated))
    if args.plot:
        _check_matplotlib()
    workers = min(len(jobs), args.jobs or os.cpu_count() or 1)
    if workers == 1:
        rows = [sweep_row(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(sweep_row, jobs))
    if args.format == "json":
        print(json.dumps({"files": [str(p) for p in source.paths], "rows": rows}, indent=2))
    else:
        _print_table(source, rows)
    if args.plot:
        write_plot(rows, args.plot, source.paths[0].name)
        if args.format != "json":
            print(f"plot written to {args.plot}")
    return 1 if any(r["failed_records"] for r in rows) else 0


def _print_table(source: Source, rows: list[dict[str, Any]]) -> None:
    print(f"Trace sweep: {source.paths[0]} ({rows[0]['records'] if rows else 0} records)")
    print(
        f"  {'policy':<12}{'L1 GB':>9}{'lookups':>10}{'hit rate':>10}{'byte hit':>10}"
        f"{'evictions':>11}{'evicted GB':>12}{'peak GB':>9}{'replay s':>10}"
    )
    for r in rows:
        print(
            f"  {r['eviction_policy']:<12}{r['l1_size_gb']:>9g}{r['lookups']:>10}{r['hit_rate']:>10.2%}"
            f"{r['byte_hit_rate']:>10.2%}{r['evicted_objects']:>11}{r['evicted_bytes'] / 2**30:>12.2f}"
            f"{r['peak_used_bytes'] / 2**30:>9.2f}{r['replay_seconds']:>10.2f}"
        )


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        raise ConfigError("--plot needs the optional package 'matplotlib'; install lmcache[plot]") from None


def write_plot(rows: list[dict[str, Any]], path: str | Path, title: str) -> None:
    """Hit rate (%) against L1 size (GB, log scale), one line per policy, as a PNG."""
    _check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        for policy in dict.fromkeys(r["eviction_policy"] for r in rows):
            mine = sorted((r for r in rows if r["eviction_policy"] == policy), key=lambda r: r["l1_size_gb"])
            ax.plot(
                [r["l1_size_gb"] for r in mine], [100 * r["hit_rate"] for r in mine], marker="o", label=policy
            )
        sizes = sorted({r["l1_size_gb"] for r in rows})
        if sizes and max(sizes) / min(sizes) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("L1 size (GB)")
        ax.set_ylabel("lookup hit rate (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"lmcache trace sweep: {title}")
        ax.grid(True, alpha=0.3)
        ax.legend(title="eviction policy")
        fig.tight_layout()
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path} ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
