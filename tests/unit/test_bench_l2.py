"""`lmcache bench l2`: runs every phase over a real adapter, verifies round trips, reports per op."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lmcache.app.bench_l2 import main

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_reports_every_phase_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.dumps({"type": "fs", "base_path": str(tmp_path)})
    assert main(["--l2-adapter", spec, "--num-keys", "4", "--data-size-kb", "8", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "every object verified byte for byte" in out
    for phase in ("store", "lookup", "load"):
        assert f"\n{phase} " in out
    assert out.count("failures 0") == 3


def test_only_one_phase(capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.dumps({"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 10})
    assert main(["--l2-adapter", spec, "--num-keys", "2", "--data-size-kb", "4", "--only", "load"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["load"]


def test_failed_operations_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.dumps(
        {
            "type": "fault_inject",
            "load_drop_rate": 1.0,
            "adapter": {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 10},
        }
    )
    assert main(["--l2-adapter", spec, "--num-keys", "3", "--data-size-kb", "4", "--rounds", "1"]) == 1
    load = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("load"))
    assert load.endswith("failures 3")


def test_bad_spec_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    spec = '{"type": "raw_block", "device_path": "/x", "slot_bytes": 8192, "io_engine": "io_uring"}'
    assert main(["--l2-adapter", spec]) == 2
    assert "io_engine 'io_uring' is not available in this build" in capsys.readouterr().err
