"""The lookup-hash log: line format, rotation by interval and by size, the cap on files (fake clock)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from lmcache.adapters.telemetry.lookup_hash_log import LookupHashLog
from lmcache.domain.events import LookupPerformed, WorkerReaped
from tests.fakes.clock import FakeClock

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def lookup(rid: str, n: int = 2) -> LookupPerformed:
    return LookupPerformed(rid, "m", 256, n * 256 + 5, tuple(bytes([i]) * 32 for i in range(n)), 0.001)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make(tmp_path: Path, clock: FakeClock, **kw: float) -> LookupHashLog:
    args: dict[str, float] = {"rotation_interval_s": 60, "rotation_max_size": 1 << 20, "max_files": 10}
    args.update(kw)
    return LookupHashLog(
        tmp_path / "logs",
        args["rotation_interval_s"],
        int(args["rotation_max_size"]),
        int(args["max_files"]),
        clock=clock.monotonic,
    )


def test_one_line_per_lookup_with_hex_hashes(tmp_path: Path) -> None:
    log = make(tmp_path, FakeClock(T0))
    log.handle(lookup("r1"), 123.5)
    log.handle(WorkerReaped(1, "m"), 124.0)  # not a lookup: ignored
    log.handle(lookup("r2", 0), 125.0)
    log.close()
    assert len(log.files) == 1
    assert log.files[0].name == "lookup_hashes_20260101_000000_000000.jsonl"
    first, second = lines(log.files[0])
    assert first == {
        "timestamp": 123.5,
        "request_id": "r1",
        "model_name": "m",
        "chunk_size": 256,
        "seq_len": 517,
        "chunk_hashes": ["0x" + "00" * 32, "0x" + "01" * 32],
    }
    assert second["chunk_hashes"] == []
    assert second["request_id"] == "r2"


def test_rotation_by_interval(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    log = make(tmp_path, clock, rotation_interval_s=60)
    log.handle(lookup("a"), T0)
    clock.advance(59.9)
    log.handle(lookup("b"), T0)
    assert len(log.files) == 1
    clock.advance(0.1)  # 60 s after the file was opened
    log.handle(lookup("c"), T0)
    log.close()
    assert len(log.files) == 2
    assert [r["request_id"] for r in lines(log.files[0])] == ["a", "b"]
    assert [r["request_id"] for r in lines(log.files[1])] == ["c"]
    assert log.files[1].name == "lookup_hashes_20260101_000100_000001.jsonl"


def test_rotation_by_size_keeps_files_under_the_limit(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    probe = make(tmp_path / "probe", clock)
    probe.handle(lookup("r0"), T0)
    probe.close()
    line_bytes = probe.files[0].stat().st_size  # every line has the same length here
    log = make(tmp_path, clock, rotation_max_size=2 * line_bytes + 1)  # two lines fit, not three
    for i in range(5):
        log.handle(lookup(f"r{i}"), T0)
    log.close()
    sizes = [p.stat().st_size for p in log.files]
    assert sizes == [2 * line_bytes, 2 * line_bytes, line_bytes]
    assert [r["request_id"] for p in log.files for r in lines(p)] == [f"r{i}" for i in range(5)]


def test_oldest_files_are_deleted_beyond_max_files(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    log = make(tmp_path, clock, rotation_interval_s=1, max_files=3)
    for i in range(6):
        log.handle(lookup(f"r{i}"), T0)
        clock.advance(1)
    log.close()
    on_disk = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert len(on_disk) == 3
    assert on_disk == sorted(p.name for p in log.files)
    assert [lines(p)[0]["request_id"] for p in log.files] == ["r3", "r4", "r5"]


def test_files_of_an_earlier_run_count_towards_the_cap(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    first = make(tmp_path, clock, rotation_interval_s=1, max_files=3)
    for i in range(2):
        first.handle(lookup(f"old{i}"), T0)
        clock.advance(1)
    first.close()
    for age, path in enumerate(reversed(first.files)):  # mtimes in creation order
        os.utime(path, (T0 - age, T0 - age))
    unrelated = tmp_path / "logs" / "notes.txt"
    unrelated.write_text("keep me")
    second = make(tmp_path, clock, rotation_interval_s=1, max_files=3)
    for i in range(2):
        second.handle(lookup(f"new{i}"), T0)
        clock.advance(1)
    second.close()
    kept = [lines(p)[0]["request_id"] for p in second.files]
    assert kept == ["old1", "new0", "new1"]
    assert unrelated.exists()
    assert second.files[-1].name.endswith("_000003.jsonl")  # numbering continues after the old files
