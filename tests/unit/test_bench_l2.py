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


def test_serde_comparison_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "master.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    spec = json.dumps({"type": "fs", "base_path": str(tmp_path / "l2")})
    chain = json.dumps([{"type": "fp8"}, {"type": "aesgcm", "master_key_path": str(key)}])
    argv = [
        "--l2-adapter",
        spec,
        "--num-keys",
        "3",
        "--data-size-kb",
        "64",
        "--rounds",
        "2",
        "--kv-model",
        "test",
    ]
    assert main([*argv, "--serde", '{"type": "zstd"}', "--serde", chain]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "test-model KV" in lines[0]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines[3:]}
    assert list(rows) == ["none", "zstd", "fp8+aesgcm"]
    assert rows["none"][2].strip() == "1.00x" and rows["zstd"][5].strip() == "exact"
    assert float(rows["zstd"][4]) < 0.8  # KV compresses
    assert 0.5 < float(rows["fp8+aesgcm"][4]) < 0.53  # fp8 halves it
    assert 0 < float(rows["fp8+aesgcm"][5]) < 0.07  # and reports its error


def test_kv_objects_look_like_the_e2e_models_kv() -> None:
    import torch

    from lmcache.app.bench_kv import MODELS, kv_objects

    objects = kv_objects(3, MODELS["test"].object_bytes // 2, "test", seed=1)
    assert [len(o) for o in objects] == [MODELS["test"].object_bytes // 2] * 3
    keys = torch.frombuffer(objects[0], dtype=torch.bfloat16).float()
    assert keys.isfinite().all() and 0.5 < float(keys.std()) < 20
    assert objects == kv_objects(3, MODELS["test"].object_bytes // 2, "test", seed=1)  # deterministic
    assert objects[0] != objects[2]
