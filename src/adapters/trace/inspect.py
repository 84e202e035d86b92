"""`lmcache trace info`: what a trace (or a lookup-hash log) holds, in one pass.

Per input: the calls per qualname, the duration, the records the recorder dropped, the distinct object
keys named anywhere, the objects and bytes reserved (written), the lookups with their chunks and bytes,
and the reuse distances of the lookups' objects (column by column, row by row, as a lookup asks for them;
see `domain/reuse_distance.py`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from lmcache.adapters.trace.calls import HANDLERS, LOOKUP_QUALNAMES, layout_bytes
from lmcache.adapters.trace.lookup_log_source import LOOKUP_LOG_CALL, read_lookups
from lmcache.adapters.trace.recorder import DROPPED_QUALNAME
from lmcache.domain.keys import ObjectKey
from lmcache.domain.reuse_distance import ReuseDistances

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from lmcache.adapters.trace.reader import TraceFile

__all__ = ("TraceSummary", "summarize_lookup_log", "summarize_trace")


@dataclass
class TraceSummary:
    """The facts `trace info` prints."""

    calls: Counter[str] = field(default_factory=Counter)
    records: int = 0
    duration_s: float = 0.0
    dropped: int = 0
    undecodable: int = 0
    distinct_keys: int = 0
    written_objects: int = 0
    written_bytes: int = 0
    lookups: int = 0
    lookup_chunks: int = 0
    lookup_bytes: int = 0
    reuse: ReuseDistances = field(default_factory=ReuseDistances)
    warnings: list[str] = field(default_factory=list)

    @property
    def mean_object_bytes(self) -> float:
        """Mean size of a looked-up object (0 without lookups)."""
        objects = self.reuse.accesses + self.reuse.ignored
        return self.lookup_bytes / objects if objects else 0.0


def _key(w: Any) -> ObjectKey:
    v = w.v
    return ObjectKey(v.chunk_hash, v.model_name, v.kv_rank, v.object_group_id, v.cache_salt)


def _lookup_rows(qualname: str, args: Any) -> tuple[list[list[Any]], list[int]]:
    if qualname.endswith("submit_prefetch_task"):
        groups = args.spec.v.key_groups
        return [g.v.keys for g in groups], [layout_bytes(g.v.layout_desc) for g in groups]
    return args.rows, list(args.object_sizes)


def _note_lookup(summary: TraceSummary, seen: set[ObjectKey], qualname: str, args: Any) -> None:
    rows, sizes = _lookup_rows(qualname, args)
    if not rows:
        return
    ncols = min(len(r) for r in rows)
    summary.lookups += 1
    summary.lookup_chunks += ncols
    summary.lookup_bytes += ncols * sum(sizes)
    access = summary.reuse.access
    for c in range(ncols):
        for row in rows:
            key = _key(row[c])
            seen.add(key)
            access(key)


def _note_write(summary: TraceSummary, seen: set[ObjectKey], qualname: str, args: Any) -> None:
    keys = [_key(w) for w in args.keys]
    seen.update(keys)
    summary.written_objects += len(keys)
    if qualname.endswith("reserve_write"):
        summary.written_bytes += len(keys) * layout_bytes(args.layout_desc)
    elif isinstance(args.sizes, int):
        summary.written_bytes += len(keys) * args.sizes
    else:
        summary.written_bytes += sum(args.sizes)


def summarize_trace(
    files: Sequence[TraceFile], *, allow_truncated: bool = False, reuse_limit: int
) -> TraceSummary:
    """Walk every record of a trace.

    Raises:
        TraceError: A truncated or corrupt frame (with file and offset).
    """
    summary = TraceSummary(reuse=ReuseDistances(limit=reuse_limit))
    seen: set[ObjectKey] = set()
    for trace in files:
        for _, record in trace.records(allow_truncated):
            qualname = record.qualname
            summary.records += 1
            summary.calls[qualname] += 1
            summary.duration_s = max(summary.duration_s, record.t_mono)
            handler = HANDLERS.get(qualname)
            if handler is None:
                continue
            try:
                args = handler[0].decode(record.args)
                if qualname == DROPPED_QUALNAME:
                    summary.dropped += args.count
                elif qualname in LOOKUP_QUALNAMES:
                    _note_lookup(summary, seen, qualname, args)
                elif qualname.endswith(("L1Manager.reserve", "reserve_write")):
                    _note_write(summary, seen, qualname, args)
                elif hasattr(args, "keys"):
                    seen.update(_key(w) for w in args.keys)
                elif hasattr(args, "key"):
                    seen.add(_key(args.key))
            except (msgspec.DecodeError, ValueError):
                summary.undecodable += 1
        summary.warnings.extend(trace.warnings)
    summary.distinct_keys = len(seen)
    return summary


def summarize_lookup_log(files: Sequence[Path], object_bytes: int, *, reuse_limit: int) -> TraceSummary:
    """The same facts for a lookup-hash log (every chunk object `object_bytes` long)."""
    summary = TraceSummary(reuse=ReuseDistances(limit=reuse_limit))
    seen: set[ObjectKey] = set()
    t0: float | None = None
    for line in read_lookups(files):
        t0 = line.timestamp if t0 is None else t0
        summary.records += 1
        summary.calls[LOOKUP_LOG_CALL] += 1
        summary.duration_s = max(summary.duration_s, line.timestamp - t0)
        summary.lookups += 1
        summary.lookup_chunks += len(line.keys)
        summary.lookup_bytes += len(line.keys) * object_bytes
        seen.update(line.keys)
        for key in line.keys:
            summary.reuse.access(key)
    summary.distinct_keys = len(seen)
    return summary
