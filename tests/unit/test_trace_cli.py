"""`lmcache trace info|replay|sweep` on recorded traces, a 0.5.6 trace and a lookup-hash log."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import pytest

from lmcache.adapters.telemetry.lookup_hash_log import LookupHashLog
from lmcache.adapters.trace.format import LEN
from lmcache.app.cli import main
from lmcache.domain.events import LookupPerformed
from tests.unit._trace_workload import OBJ, record_trace
from tests.unit.test_trace_format import FIXTURE_056

if TYPE_CHECKING:
    from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("trace") / "t.lct"
    return path, record_trace(path, n=500)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["trace", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_summarises_the_trace(capsys: pytest.CaptureFixture[str], trace: tuple[Path, list[int]]) -> None:
    path, live = trace
    code, out, _ = run(capsys, "info", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["header"]["producer"].startswith("lmcache-server") and doc["header"]["level"] == "storage"
    assert doc["lookups"]["count"] == len(live)
    assert doc["calls"]["lmcache.domain.prefetch_controller.PrefetchController.run_job_now"] == len(live)
    assert doc["distinct_keys"] > 0 and doc["written"]["bytes"] == doc["written"]["objects"] * OBJ
    reuse = doc["reuse_distance"]
    assert reuse["accesses"] >= doc["lookups"]["chunks"]  # one access per chunk and rank
    assert reuse["reuses"] + reuse["cold"] == reuse["accesses"] and reuse["objects"]["p50"] >= 0
    assert doc["duration_s"] > 0 and doc["file_bytes"] == path.stat().st_size
    code, text, _ = run(capsys, "info", str(path))
    assert code == 0 and "reuse distance" in text and "p99" in text and "run_job_now" in text


def test_replay_reports_the_live_hits(
    capsys: pytest.CaptureFixture[str], trace: tuple[Path, list[int]]
) -> None:
    path, live = trace
    code, out, _ = run(capsys, "replay", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["lookups"]["count"] == len(live) and doc["lookups"]["hit_chunks"] == sum(live)
    assert doc["engine"]["l1_bytes"] == 64 * OBJ and doc["engine"]["eviction_policy"] == "LRU"
    assert doc["failed"] == 0 and doc["evictions"]["objects"] > 0 and doc["peak_used_bytes"] <= 64 * OBJ
    assert doc["calls"]["lmcache.domain.l1_manager.L1Manager.reserve"]["count"] > 0
    code, text, _ = run(capsys, "replay", str(path))
    assert code == 0 and "hit rate" in text and "M calls/min" in text and "peak L1 usage" in text


def test_replay_overrides_use_the_server_flag_rules(
    capsys: pytest.CaptureFixture[str], trace: tuple[Path, list[int]]
) -> None:
    path, live = trace
    code, out, _ = run(
        capsys, "replay", str(path), "--l1-size-gb", str(256 * OBJ / 2**30), "--format", "json"
    )
    assert code == 0 and json.loads(out)["lookups"]["hit_chunks"] > sum(live)
    code, _, err = run(capsys, "replay", str(path), "--eviction-ratio", "1.5")
    assert code == 2 and "--eviction-ratio:" in err and "1.5" in err
    code, _, err = run(capsys, "replay", str(path), "--l1-size-gb", "0")
    assert code == 2 and "--l1-size-gb:" in err


def test_truncated_and_corrupt_traces_name_the_offset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trace: tuple[Path, list[int]]
) -> None:
    path, _ = trace
    data = path.read_bytes()
    offsets, off = [], 0
    while off < len(data):
        offsets.append(off)
        off += 4 + LEN.unpack_from(data, off)[0]
    cut = tmp_path / "cut.lct"
    cut.write_bytes(data[: offsets[200] + 10])
    for action in ("info", "replay"):
        code, _, err = run(capsys, action, str(cut))
        assert code == 1 and f"at byte offset {offsets[200]}" in err and "truncated frame" in err
    code, out, err = run(capsys, "replay", str(cut), "--allow-truncated", "--format", "json")
    assert code == 0 and json.loads(out)["records"] == 199 and "ignored" in err
    bad = tmp_path / "bad.lct"
    bad.write_bytes(b"not a trace at all")
    code, _, err = run(capsys, "info", str(bad))
    assert code == 1 and "not an lmcache trace" in err


def test_sweep_prints_the_table_and_writes_the_plot(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, trace: tuple[Path, list[int]]
) -> None:
    path, _ = trace
    sizes = ",".join(str(n * OBJ / 2**30) for n in (16, 64, 256))
    plot = tmp_path / "hit.png"
    code, out, _ = run(
        capsys,
        "sweep",
        str(path),
        "--l1-size-gb",
        sizes,
        "--eviction-policy",
        "LRU,noop",
        "--plot",
        str(plot),
        "--jobs",
        "2",
    )
    assert code == 0, out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith(("LRU", "noop"))]
    expected = [(policy, n * OBJ / 2**30) for policy in ("LRU", "noop") for n in (16, 64, 256)]
    assert [(row[0], pytest.approx(float(row[1]), rel=1e-5)) for row in lines] == expected
    lru = [float(row[3].rstrip("%")) for row in lines if row[0] == "LRU"]
    assert lru == sorted(lru) and lru[0] < lru[-1]
    assert plot.read_bytes().startswith(PNG) and plot.stat().st_size > 5000
    code, out, _ = run(capsys, "sweep", str(path), "--l1-size-gb", sizes, "--jobs", "1", "--format", "json")
    rows = json.loads(out)["rows"]
    assert [r["eviction_policy"] for r in rows] == ["LRU"] * 3  # the recorded policy by default
    assert rows[1]["hit_rate"] == pytest.approx(lru[1] / 100, abs=1e-4)


def test_sweep_without_matplotlib_names_the_extra(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    trace: tuple[Path, list[int]],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    code, _, err = run(capsys, "sweep", str(trace[0]), "--l1-size-gb", "1", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and "lmcache[plot]" in err and "matplotlib" in err


def test_sweep_refuses_bad_lists(capsys: pytest.CaptureFixture[str], trace: tuple[Path, list[int]]) -> None:
    for flags in (
        ["--l1-size-gb", "1,,2"],
        ["--l1-size-gb", "1,-2"],
        ["--l1-size-gb", "1", "--eviction-policy", "FIFO"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["trace", "sweep", str(trace[0]), *flags])
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_a_056_trace_replays_to_the_hits_056_answered(capsys: pytest.CaptureFixture[str]) -> None:
    """The fixture: `scripts/trace_interop_056.py --requests 12` against 0.5.6, which answered 27 hits."""
    code, out, _ = run(capsys, "replay", str(FIXTURE_056), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["engine"]["l1_bytes"] == 107374182 and doc["engine"]["eviction_policy"] == "LRU"
    assert doc["lookups"]["count"] == 24 and doc["lookups"]["chunks"] == 72 and doc["failed"] == 0
    assert doc["lookups"]["hit_chunks"] == 27
    assert doc["written"]["bytes"] == doc["written"]["objects"] * 4 * 2**20  # [2, 4, 256, 1024] fp16
    code, out, _ = run(capsys, "info", str(FIXTURE_056))
    assert code == 0 and "LMCache 0.5.6" in out and "submit_prefetch_task: 24" in out


def _lookup_log(directory: Path) -> None:
    log = LookupHashLog(directory, 3600, 2000, 100, clock=iter(range(10**6)).__next__)  # rotates by size
    for i in range(300):
        prompt = (i * 7) % 23
        hashes = tuple(bytes([prompt, c]) * 16 for c in range(4))
        log.handle(LookupPerformed(f"r{i}", "m", 256, 1024, hashes, 0.0), 1000.0 + i)
    log.close()


def test_the_lookup_hash_log_feeds_info_replay_and_sweep(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _lookup_log(tmp_path / "log")
    assert len(list((tmp_path / "log").glob("*.jsonl"))) > 1
    code, _, err = run(
        capsys, "replay", str(tmp_path / "log"), "--l1-size-gb", "1", "--eviction-policy", "LRU"
    )
    assert code == 2 and "--chunk-bytes" in err
    code, out, _ = run(capsys, "info", str(tmp_path / "log"), "--chunk-bytes", str(OBJ), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["lookups"]["count"] == 300 and doc["distinct_keys"] == 23 * 4
    code, _, err = run(capsys, "replay", str(tmp_path / "log"), "--chunk-bytes", str(OBJ))
    assert code == 2 and "--l1-size-gb: required" in err
    flags = ["--chunk-bytes", str(OBJ), "--format", "json", "--eviction-policy", "LRU"]
    code, out, _ = run(
        capsys, "replay", str(tmp_path / "log"), "--l1-size-gb", str(200 * OBJ / 2**30), *flags
    )
    big = json.loads(out)["lookups"]
    assert code == 0 and big["hit_chunks"] == 300 * 4 - 23 * 4  # all fit: only first uses miss
    sizes = ",".join(str(n * OBJ / 2**30) for n in (8, 40, 200))
    code, out, _ = run(
        capsys,
        "sweep",
        str(tmp_path / "log"),
        "--l1-size-gb",
        sizes,
        "--jobs",
        "1",
        *flags[:4],
        "--eviction-policy",
        "LRU,noop",
    )
    rows = json.loads(out)["rows"]
    assert code == 0 and len(rows) == 6
    assert rows[2]["hit_rate"] == pytest.approx(big["hit_rate"]) and rows[0]["hit_rate"] < rows[2]["hit_rate"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chunk_hashes": ["0xzz"]}\n')
    code, _, err = run(capsys, "info", str(bad), "--chunk-bytes", "1")
    assert code == 1 and "line 1" in err


def test_a_rotated_trace_is_read_whole_from_its_first_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "rot.lct"
    live = record_trace(path, n=300, rotate_bytes=20_000)
    parts = sorted(tmp_path.glob("rot*.lct"))
    assert len(parts) >= 2  # how many depends on how the writer batches records under load
    code, out, _ = run(capsys, "replay", str(path), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and len(doc["files"]) == len(parts) and doc["lookups"]["hit_chunks"] == sum(live)
    code, out, _ = run(capsys, "info", *map(str, reversed(parts)), "--format", "json")
    assert code == 0 and json.loads(out)["lookups"]["count"] == len(live)
    last = tmp_path / f"rot.{len(parts) - 1}.lct"
    code, out, _ = run(capsys, "info", str(last), "--format", "json")  # a later part alone: its own records
    later = json.loads(out)
    assert code == 0 and later["files"] == [str(last)] and 0 < later["records"] < doc["records"]
