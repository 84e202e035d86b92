"""`lmcache trace info|replay|sweep`: the commands behind `trace_args.py`'s flags.

A trace that cannot be read (truncated, corrupt, not a trace) prints one line naming the file and the
byte offset of the bad frame and exits 1; a bad flag exits 2. `replay` also exits 1 when a record failed
to replay. `--format json` prints one JSON document instead of the text report.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lmcache.adapters.trace.inspect import summarize_lookup_log, summarize_trace
from lmcache.adapters.trace.reader import TraceError, open_series
from lmcache.app.config.errors import ConfigError
from lmcache.app.trace_run import Source, open_source, overrides_of, replay_one, settings_for

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable

    from lmcache.adapters.trace.inspect import TraceSummary
    from lmcache.adapters.trace.player import PlayResult
    from lmcache.domain.trace_replay import ReplayEngine

__all__ = ("human_bytes", "replay_report", "run_trace")


def human_bytes(n: float) -> str:
    """`n` bytes in binary units (`4.0 MiB`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run_trace(args: argparse.Namespace) -> int:
    """Run one `lmcache trace` action; returns the exit status."""
    try:
        if args.trace_command == "sweep":
            from lmcache.app.trace_sweep import run_sweep

            return run_sweep(args)
        source = open_source(args.inputs, args.chunk_bytes)
        if args.trace_command == "info":
            return _info(args, source)
        return _replay(args, source)
    except ConfigError as exc:
        for message in exc.messages:
            print(f"lmcache trace {args.trace_command}: error: {message}", file=sys.stderr)
        return 2
    except TraceError as exc:
        print(f"lmcache trace {args.trace_command}: error: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------- info
def _info(args: argparse.Namespace, source: Source) -> int:
    if source.kind == "log":
        assert source.chunk_bytes is not None
        summary = summarize_lookup_log(source.paths, source.chunk_bytes, reuse_limit=args.reuse_limit)
    else:
        files = open_series(source.paths)
        try:
            summary = summarize_trace(
                files, allow_truncated=args.allow_truncated, reuse_limit=args.reuse_limit
            )
        finally:
            for f in files:
                f.close()
    _report(args.format, _info_doc(source, summary), _print_info, warnings=summary.warnings)
    return 0


def _report(
    fmt: str,
    doc: dict[str, Any],
    print_text: Callable[[dict[str, Any]], None],
    *,
    warnings: Iterable[str] = (),
    errors: Iterable[str] = (),
) -> None:
    """`doc` as JSON or text on stdout; then its warnings and errors on stderr."""
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        print_text(doc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)


def _header_doc(source: Source) -> dict[str, Any]:
    header = source.header
    if header is None:
        return {"kind": "lookup-hash log"}
    return {
        "kind": "trace",
        "level": header.level,
        "format_version": header.format_version,
        "trace_schema_version": header.trace_schema_version,
        "producer": header.level_meta.get("producer", "(not named: LMCache 0.5.6 or older)"),
        "started": datetime.fromtimestamp(header.t_wall_start, UTC).isoformat(timespec="seconds"),
        "sm_config_digest": header.sm_config_digest or None,
        "level_meta": header.level_meta,
    }


def _info_doc(source: Source, s: TraceSummary) -> dict[str, Any]:
    reuse = s.reuse
    return {
        "files": [str(p) for p in source.paths],
        "header": _header_doc(source),
        "duration_s": round(s.duration_s, 6),
        "records": s.records,
        "dropped_records": s.dropped,
        "undecodable_records": s.undecodable,
        "calls": dict(sorted(s.calls.items())),
        "file_bytes": sum(p.stat().st_size for p in source.paths),
        "distinct_keys": s.distinct_keys,
        "written": {"objects": s.written_objects, "bytes": s.written_bytes},
        "lookups": {"count": s.lookups, "chunks": s.lookup_chunks, "bytes": s.lookup_bytes},
        "reuse_distance": {
            "accesses": reuse.accesses,
            "not_counted": reuse.ignored,
            "cold": reuse.cold,
            "reuses": len(reuse.distances),
            "distinct_objects": reuse.distinct,
            "mean_object_bytes": round(s.mean_object_bytes),
            "objects": reuse.percentiles(),
        },
    }


def _print_info(doc: dict[str, Any]) -> None:
    files = doc["files"]
    more = f" (+{len(files) - 1} more parts)" if len(files) > 1 else ""
    print(f"Trace file: {files[0]}{more}")
    for key, value in doc["header"].items():
        if key != "level_meta":
            print(f"  {key + ':':<24}{value}")
    print(f"  {'duration:':<24}{doc['duration_s']:.3f} s")
    print(f"  {'records:':<24}{doc['records']} ({doc['dropped_records']} dropped by the recorder)")
    print(f"  {'file bytes:':<24}{doc['file_bytes']} ({human_bytes(doc['file_bytes'])})")
    print(f"  {'distinct keys:':<24}{doc['distinct_keys']}")
    w, lk = doc["written"], doc["lookups"]
    print(f"  {'written:':<24}{w['objects']} objects, {human_bytes(w['bytes'])}")
    print(f"  {'looked up:':<24}{lk['count']} lookups, {lk['chunks']} chunks, {human_bytes(lk['bytes'])}")
    print("  calls:")
    for name, count in doc["calls"].items():
        print(f"    {name}: {count}")
    r = doc["reuse_distance"]
    print(
        f"  reuse distance (distinct objects between two lookups of one object): {r['reuses']} reuses, "
        f"{r['cold']} first uses of {r['accesses']} accesses"
        + (f" ({r['not_counted']} more not counted)" if r["not_counted"] else "")
    )
    if r["objects"]:
        size = r["mean_object_bytes"]
        cols = "  ".join(f"{k} {v} (~{human_bytes(v * size)})" for k, v in r["objects"].items())
        print(f"    {cols}")


# -------------------------------------------------------------------------------------------- replay
def _replay(args: argparse.Namespace, source: Source) -> int:
    settings = settings_for(source, overrides_of(args), args.no_l2)
    engine, result = replay_one(source, settings, args.allow_truncated)
    doc = replay_report(source, engine, result)
    _report(args.format, doc, _print_replay, warnings=result.warnings, errors=result.errors)
    return 1 if result.failed else 0


def replay_report(source: Source, engine: ReplayEngine, result: PlayResult) -> dict[str, Any]:
    """The replay's numbers as one JSON-able document."""
    s, cfg = engine.stats, engine.settings
    return {
        "files": [str(p) for p in source.paths],
        "engine": {
            "l1_bytes": cfg.l1_bytes,
            "eviction_policy": cfg.eviction_policy,
            "eviction_trigger_watermark": cfg.trigger_watermark,
            "eviction_ratio": cfg.eviction_ratio,
            "l2_simulated": cfg.l2,
        },
        "records": result.records,
        "replayed": result.replayed,
        "skipped": result.skipped,
        "failed": result.failed,
        "dropped_by_recorder": s.dropped_records,
        "trace_duration_s": round(result.duration_s, 6),
        "replay_seconds": round(result.wall_s, 6),
        "calls_per_minute": round(result.calls_per_minute),
        "lookups": {
            "count": s.lookups,
            "chunks": s.lookup_chunks,
            "hit_chunks": s.hit_chunks,
            "hit_rate": round(s.hit_rate, 6),
            "byte_hit_rate": round(s.byte_hit_rate, 6),
            "objects_from_l1": s.l1_hit_objects,
            "objects_from_l2": s.l2_hit_objects,
        },
        "written": {"objects": s.written_objects, "bytes": s.written_bytes, "written_back": s.written_back},
        "reads": {"count": s.reads, "misses": s.read_misses, "bytes": s.read_bytes},
        "evictions": {
            "objects": s.evicted_objects,
            "bytes": s.evicted_bytes,
            "other_removals": s.removed_other,
        },
        "allocation_failures": s.allocation_failures,
        "peak_used_bytes": s.peak_used_bytes,
        "calls": {
            name: {
                "count": t.count,
                "mean_us": round(t.total_s / t.count * 1e6, 3) if t.count else 0.0,
                "p99_us": round(t.percentile_s(0.99) * 1e6, 3),
                "max_us": round(t.max_s * 1e6, 3),
                "total_s": round(t.total_s, 6),
            }
            for name, t in sorted(result.timings.items())
        },
    }


def _print_replay(doc: dict[str, Any]) -> None:
    e, lk = doc["engine"], doc["lookups"]
    print(
        f"Trace replay: {doc['files'][0]}"
        + (f" (+{len(doc['files']) - 1} parts)" if len(doc["files"]) > 1 else "")
    )
    print(
        f"  engine: L1 {human_bytes(e['l1_bytes'])}, {e['eviction_policy']}, watermark "
        f"{e['eviction_trigger_watermark']:g}, ratio {e['eviction_ratio']:g}, L2 simulated: "
        f"{'yes' if e['l2_simulated'] else 'no'}"
    )
    print(
        f"  records: {doc['records']} ({doc['replayed']} replayed, {sum(doc['skipped'].values())} skipped, "
        f"{doc['failed']} failed, {doc['dropped_by_recorder']} dropped by the recorder) in "
        f"{doc['replay_seconds']:.3f} s: {doc['calls_per_minute'] / 1e6:.2f} M calls/min"
    )
    print(
        f"  lookups: {lk['count']}, {lk['hit_chunks']} of {lk['chunks']} chunks hit: hit rate "
        f"{lk['hit_rate']:.2%}, byte hit rate {lk['byte_hit_rate']:.2%} (objects from L1 "
        f"{lk['objects_from_l1']}, from L2 {lk['objects_from_l2']})"
    )
    w, r, ev = doc["written"], doc["reads"], doc["evictions"]
    print(f"  written: {w['objects']} objects, {human_bytes(w['bytes'])} ({w['written_back']} after a miss)")
    print(f"  reads: {r['count']} ({r['misses']} missed)")
    print(
        f"  evictions: {ev['objects']} objects, {human_bytes(ev['bytes'])} ({ev['other_removals']} other "
        f"removals, {doc['allocation_failures']} allocation failures)"
    )
    peak = doc["peak_used_bytes"]
    print(
        f"  peak L1 usage: {human_bytes(peak)} of {human_bytes(e['l1_bytes'])} ({peak / e['l1_bytes']:.1%})"
    )
    width = max((len(name) for name in doc["calls"]), default=4) + 2
    print(f"  {'call':<{width}}{'count':>9}{'mean us':>10}{'p99 us':>10}{'max us':>10}")
    for name, c in doc["calls"].items():
        times = f"{c['mean_us']:>10.1f}{c['p99_us']:>10.1f}{c['max_us']:>10.1f}"
        print(f"  {name:<{width}}{c['count']:>9}{times}")
