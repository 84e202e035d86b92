"""Drives a `ReplayEngine` through the records of a trace and times every call.

Records run in file order on one thread, each at its recorded time on the replay clock. A record whose
qualname has no handler is skipped and counted (a newer producer, another trace level); one whose
arguments do not decode, or whose call raises, is counted as failed and the first few are kept with their
file and offset. Per qualname the player keeps the count, total and maximum time, and a power-of-two
histogram of nanoseconds for the percentiles (so memory stays flat however long the trace).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from lmcache.adapters.trace.calls import HANDLERS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.adapters.trace.reader import TraceFile
    from lmcache.domain.trace_replay import ReplayEngine

__all__ = ("CallTiming", "PlayResult", "play")

_MAX_ERRORS = 10


@dataclass
class CallTiming:
    """Time spent in one qualname's calls."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * 64)

    def add(self, seconds: float) -> None:
        """Count one call of `seconds`."""
        self.count += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds
        self.buckets[min(63, int(seconds * 1e9).bit_length())] += 1

    def percentile_s(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (within a factor of two)."""
        rank = q * self.count
        seen = 0
        for bits, n in enumerate(self.buckets):
            seen += n
            if n and seen >= rank:
                return min(self.max_s, (1 << bits) / 1e9)
        return self.max_s


@dataclass
class PlayResult:
    """What the player did (the engine's `stats` hold what the calls did)."""

    records: int = 0
    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, CallTiming] = field(default_factory=dict)
    duration_s: float = 0.0
    wall_s: float = 0.0

    @property
    def calls_per_minute(self) -> float:
        """Replay speed: records per minute of wall time."""
        return self.records / self.wall_s * 60 if self.wall_s else 0.0


def play(
    files: Sequence[TraceFile],
    engine: ReplayEngine,
    *,
    allow_truncated: bool = False,
    on_record: Callable[[str, float], None] | None = None,
) -> PlayResult:
    """Replay every record of `files` (one ordered series) on `engine`.

    Args:
        files: The trace's files, in order (`open_series`).
        engine: A fresh engine.
        allow_truncated: Accept a cut-short last frame (a warning) instead of failing.
        on_record: Called with (qualname, seconds) after each replayed call (`--verbose`).

    Raises:
        TraceError: A truncated or corrupt frame (with its file and offset).
    """
    result = PlayResult()
    handlers, timings = HANDLERS, result.timings
    clock = time.perf_counter
    started = clock()
    at, note = engine.at, engine.note_usage
    last_t = 0.0
    for trace in files:
        for offset, record in trace.records(allow_truncated):
            result.records += 1
            qualname = record.qualname
            handler = handlers.get(qualname)
            if handler is None:
                result.skipped[qualname] = result.skipped.get(qualname, 0) + 1
                continue
            decoder, call = handler
            last_t = record.t_mono
            try:
                args = decoder.decode(record.args)
                at(last_t)
                t0 = clock()
                call(engine, args)
                spent = clock() - t0
            except (msgspec.DecodeError, ValueError, TypeError, KeyError) as exc:
                result.failed += 1
                if len(result.errors) < _MAX_ERRORS:
                    result.errors.append(f"{trace.path} at byte offset {offset}: {qualname}: {exc}")
                continue
            note()
            timing = timings.get(qualname)
            if timing is None:
                timing = timings[qualname] = CallTiming()
            timing.add(spent)
            result.replayed += 1
            if on_record is not None:
                on_record(qualname, spent)
        result.warnings.extend(trace.warnings)
    result.wall_s = clock() - started
    result.duration_s = last_t
    return result
