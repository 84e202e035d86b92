"""The lookup-hash JSONL log (`--lookup-hash-log-dir`) as a replay source, for capacity planning.

A directory means its `lookup_hashes_*.jsonl` files, oldest first (by the sequence number in the name);
files may also be named one by one. Each line is one lookup: `timestamp`, `model_name` and `chunk_hashes`
(`0x`-prefixed hex) are used. The log holds no object sizes, so the caller gives the bytes of one chunk
object; keys are built with kv_rank 0 and the default salt (a log's hashes are already per model).
Replaying a lookup locks and reads its prefix hits and stores the rest, as the engine would after
computing them (`ReplayEngine.lookup_and_fill`). A malformed line raises `TraceError` with its file and
line number.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from lmcache.adapters.trace.player import CallTiming, PlayResult
from lmcache.adapters.trace.reader import TraceError
from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from lmcache.domain.trace_replay import ReplayEngine

__all__ = (
    "LOOKUP_LOG_CALL",
    "LookupLine",
    "is_lookup_log",
    "lookup_log_files",
    "play_lookup_log",
    "read_lookups",
)

LOOKUP_LOG_CALL = "lookup_hash_log.lookup"
_NAME = re.compile(r"^lookup_hashes_\d{8}_\d{6}_(\d+)\.jsonl$")


class _Line(msgspec.Struct):
    chunk_hashes: list[str]
    timestamp: float = 0.0
    model_name: str = ""


@dataclass(frozen=True, slots=True)
class LookupLine:
    """One logged lookup."""

    timestamp: float
    keys: list[ObjectKey]


def is_lookup_log(paths: Sequence[Path | str]) -> bool:
    """Whether the inputs are a lookup-hash log (a directory, or `.jsonl` files) rather than traces."""
    return any(Path(p).is_dir() or str(p).endswith(".jsonl") for p in paths)


def lookup_log_files(paths: Sequence[Path | str]) -> list[Path]:
    """The log files, in order.

    Raises:
        TraceError: A path is missing or a directory holds no log file.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [(int(m[1]), f) for f in p.iterdir() if (m := _NAME.match(f.name))]
            if not found:
                raise TraceError(p, "no lookup_hashes_*.jsonl file in this directory")
            files.extend(f for _, f in sorted(found))
        elif p.is_file():
            files.append(p)
        else:
            raise TraceError(p, "no such file or directory")
    return files


def read_lookups(files: Sequence[Path]) -> Iterator[LookupLine]:
    """Every logged lookup, in file order.

    Raises:
        TraceError: A line that is not a lookup record (file and line number in the message).
    """
    decoder = msgspec.json.Decoder(_Line)
    key = ObjectKey
    for path in files:
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise TraceError(path, f"cannot read ({exc.strerror or exc})") from None
        with handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    line = decoder.decode(raw)
                    model = line.model_name or "unknown"
                    keys = [key(bytes.fromhex(h.removeprefix("0x")), model, 0) for h in line.chunk_hashes]
                except (msgspec.DecodeError, ValueError) as exc:
                    raise TraceError(path, f"line {number} is not a lookup record ({exc})") from None
                yield LookupLine(line.timestamp, keys)


def play_lookup_log(files: Sequence[Path], engine: ReplayEngine, object_bytes: int) -> PlayResult:
    """Replay a lookup-hash log on `engine` (each chunk object `object_bytes` long)."""
    result = PlayResult()
    timing = result.timings[LOOKUP_LOG_CALL] = CallTiming()
    clock = time.perf_counter
    started = clock()
    t0: float | None = None
    for line in read_lookups(files):
        result.records += 1
        if t0 is None:
            t0 = line.timestamp
        engine.at(max(0.0, line.timestamp - t0))
        begin = clock()
        engine.lookup_and_fill(line.keys, object_bytes)
        timing.add(clock() - begin)
        engine.note_usage()
        result.replayed += 1
        result.duration_s = max(result.duration_s, line.timestamp - t0)
    result.wall_s = clock() - started
    return result
