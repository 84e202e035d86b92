"""`lmcache bench server --trace PATH`: check that the server's storage trace reproduces the run.

The server under test runs with `--trace-level storage --trace-output PATH`. After the benchmark, this
waits (up to `timeout_s`) until the trace holds at least as many lookups as the benchmark made, then
summarises it (`trace info`) and replays it on a fresh engine built from its recorded configuration
(`trace replay`). The check: the replay's last N lookups, N being the benchmark's, hit exactly the chunks
the live server answered, lookup by lookup. Use a server no other client talks to meanwhile; earlier
traffic in the same trace is fine (only the tail is compared). The trace may still be growing: a frame
cut short at its end is ignored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lmcache.adapters.trace.inspect import summarize_trace
from lmcache.adapters.trace.reader import TraceError, open_series, series_paths
from lmcache.app.config.errors import ConfigError
from lmcache.app.trace_run import open_source, replay_one, settings_for

__all__ = ("check_trace",)


def _lookups_recorded(paths: list[Path]) -> int:
    files = open_series(paths)
    try:
        return summarize_trace(files, allow_truncated=True, reuse_limit=1).lookups
    finally:
        for f in files:
            f.close()


def check_trace(path: str, live_hits: list[int], timeout_s: float) -> dict[str, Any]:
    """Replay the server's trace and compare its lookups with the live ones; the summary's `trace` part.

    Returns:
        `ok`, the files, record and lookup counts, the live and replayed hit totals over the compared
        lookups, the replay's overall hit rate and speed, and `error` when the check could not run.
    """
    out: dict[str, Any] = {
        "ok": False,
        "path": path,
        "live_lookups": len(live_hits),
        "live_hits": sum(live_hits),
    }
    paths = series_paths(Path(path))
    deadline = time.monotonic() + timeout_s
    try:
        while _lookups_recorded(paths) < len(live_hits):
            if time.monotonic() > deadline:
                out["error"] = f"the trace holds fewer than the {len(live_hits)} lookups made"
                return out
            time.sleep(0.1)
            paths = series_paths(Path(path))
        files = open_series(paths)
        try:
            summary = summarize_trace(files, allow_truncated=True, reuse_limit=1_000_000)
        finally:
            for f in files:
                f.close()
        source = open_source(paths, None)
        engine, result = replay_one(source, settings_for(source, {}), allow_truncated=True)
    except (TraceError, ConfigError) as exc:
        out["error"] = str(exc)
        return out
    replayed = list(engine.stats.per_lookup[-len(live_hits) :]) if live_hits else []
    out.update(
        files=[str(p) for p in paths],
        records=summary.records,
        dropped=summary.dropped,
        distinct_keys=summary.distinct_keys,
        recorded_lookups=engine.stats.lookups,
        replayed_hits=sum(replayed),
        replay_hit_rate=engine.stats.hit_rate,
        replay_calls_per_minute=round(result.calls_per_minute),
        failed_records=result.failed,
    )
    out["ok"] = replayed == live_hits and not result.failed and not summary.dropped
    if not out["ok"]:
        first = next((i for i, (a, b) in enumerate(zip(replayed, live_hits, strict=False)) if a != b), None)
        out["error"] = (
            f"replay differs from the live run (first at compared lookup {first})"
            if first is not None
            else "replay failed records or the recorder dropped some"
        )
    return out
