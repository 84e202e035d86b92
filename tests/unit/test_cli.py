"""The `lmcache` command as a person runs it: exit statuses, messages without tracebacks, --print-config."""

from __future__ import annotations

import ctypes.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from lmcache.app.cli import EXIT_CONFIG, main
from lmcache.app.config import ServerConfig, load_config

if TYPE_CHECKING:
    from collections.abc import Callable


REQUIRED = ["--l1-size-gb", "1", "--eviction-policy", "LRU"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmcache.app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_config_error_exits_2_without_traceback() -> None:
    result = _run("server", "--l1-size-gb", "1", "--eviction-policy", "LRU", "--eviction-ratio", "1.5")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == "lmcache server: error: --eviction-ratio: must be <= 1 (got 1.5)"
    assert "Traceback" not in result.stderr


def test_missing_required_flags_exit_2() -> None:
    result = _run("server")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.splitlines() == [
        "lmcache server: error: --l1-size-gb is required",
        "lmcache server: error: --eviction-policy is required",
    ]


def test_server_port_in_use_exits_2_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("server", *REQUIRED, "--host", "127.0.0.1", "--port", str(port), "--shm-name", "")
    assert result.returncode == EXIT_CONFIG
    assert f"--host/--port: cannot bind 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    ctypes.util.find_library("cufile") is not None, reason="GPUDirect Storage is installed here"
)
def test_unavailable_l2_backend_fails_at_start_up() -> None:
    result = _run(
        "server",
        *REQUIRED,
        "--l2-adapter",
        '{"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}',
        "--l2-adapter",
        '{"type": "nixl_store", "backend": "GDS", "pool_size": 4,'
        ' "backend_params": {"file_path": "/tmp", "use_direct_io": "true"}}',
    )
    assert result.returncode == EXIT_CONFIG
    assert (
        "--l2-adapter #2 (type 'nixl_store'): nixl backend 'GDS' cannot start: libcufile.so.0 is missing"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["server", *REQUIRED, "--max-workers", "3", "--l2-adapter", '{"type": "fs", "base_path": "/l2"}']
    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    profile = tmp_path / "printed.yaml"
    profile.write_text(printed)
    again = load_config(ServerConfig, profiles=[profile])
    assert again.model_dump() == ServerConfig.model_validate(yaml.safe_load(printed)).model_dump()
    assert again.mp.max_gpu_workers == 3 and again.l2.l2_adapter[0].type == "fs"


def test_print_config_layers_profile_and_flags(
    write_yaml: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    profile = write_yaml("p.yaml", "l1: {l1_size_gb: 4, eviction_policy: IsolatedLRU}\nmp: {port: 7000}\n")
    assert main(["server", "--config", str(profile), "--port", "7001", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["mp"]["port"], printed["l1"]["l1_size_gb"], printed["l1"]["eviction_policy"]) == (
        7001,
        4.0,
        "IsolatedLRU",
    )


def test_coordinator_env_and_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMCACHE_MP_COORDINATOR_PORT", "9400")
    monkeypatch.setenv("LMCACHE_MP_COORDINATOR_INSTANCE_TIMEOUT", "45")
    assert main(["coordinator", "--port", "9500", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["port"], printed["instance_timeout"]) == (9500, 45)


def test_coordinator_bad_env_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMCACHE_MP_COORDINATOR_EVICTION_RATIO", "2")
    assert main(["coordinator"]) == EXIT_CONFIG
    assert capsys.readouterr().err.strip() == (
        "lmcache coordinator: error: LMCACHE_MP_COORDINATOR_EVICTION_RATIO: must be <= 1 (got 2)"
    )


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "lmcache"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("lmcache ")


def test_gds_without_cufile_fails_at_start_up(tmp_path: Path) -> None:
    result = _run("server", *REQUIRED, "--gds-l1-path", str(tmp_path))
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith(f"lmcache server: error: --gds-l1-path {tmp_path}: GDS L1 cannot start: ")
    assert "Traceback" not in result.stderr


def test_devdax_file_is_mapped_at_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "dax"
    result = _run("server", *REQUIRED, "--l1-devdax-path", str(missing), "--no-l1-use-lazy", "--shm-name", "")
    assert result.returncode == EXIT_CONFIG
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
