"""Runtime plugin discovery (what runs, how, what is refused) and the environment plugins get."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import pytest

from lmcache.app.config import ConfigError
from lmcache.app.container import ServerContainer
from lmcache.app.plugin_wiring import discover_plugins, plugin_environment
from tests.unit.config_helpers import server

if TYPE_CHECKING:
    from pathlib import Path


def _files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "py": tmp_path / "beat.py",
        "exe": tmp_path / "tool.sh",
        "txt": tmp_path / "README.md",
    }
    for p in paths.values():
        p.write_text("#!/bin/sh\nexit 0\n")
    paths["exe"].chmod(0o755)
    return paths


def test_a_py_script_runs_with_the_server_interpreter_an_executable_directly(tmp_path: Path) -> None:
    f = _files(tmp_path)
    py, exe = discover_plugins([str(f["py"]), str(f["exe"])])
    assert py.argv == (sys.executable, str(f["py"])) and py.name == "beat.py"
    assert exe.argv == (str(f["exe"]),) and exe.name == "tool.sh"


def test_anything_else_is_refused_naming_the_flag_and_the_file(tmp_path: Path) -> None:
    f = _files(tmp_path)
    with pytest.raises(ConfigError, match=r"--runtime-plugin-locations: .*README.md is neither a .py script"):
        discover_plugins([str(f["txt"])])
    with pytest.raises(ConfigError, match=r"--runtime-plugin-locations: /no/such does not exist"):
        discover_plugins(["/no/such"])


def test_a_directory_launches_its_scripts_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    (d / "sub").mkdir(parents=True)
    for name in ("b.py", "a.py", "_helper.py", ".hidden.py"):
        (d / name).write_text("pass\n")
    (d / "sub" / "c.py").write_text("pass\n")  # not recursive
    assert [s.name for s in discover_plugins([str(d)])] == ["a.py", "b.py"]
    (d / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes.txt is neither"):
        discover_plugins([str(d)])


def test_same_names_from_two_places_stay_apart(tmp_path: Path) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "p.py").write_text("pass\n")
    assert [s.name for s in discover_plugins([str(tmp_path / "x"), str(tmp_path / "y")])] == [
        "p.py",
        "y/p.py",
    ]


def test_the_environment_carries_the_config_and_the_extra_config(tmp_path: Path) -> None:
    extra = {"plugin.heartbeat.url": "http://127.0.0.1:9/hb", "n": 3}
    config = server(
        ["--runtime-plugin-config", json.dumps(extra), "--http-port", "8181", "--chunk-size", "512"]
    )
    env = plugin_environment(config, {"PATH": "/bin"})
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert json.loads(env["LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG"]) == extra
    full = json.loads(env["LMCACHE_RUNTIME_PLUGIN_CONFIG"])
    assert full["mp"]["chunk_size"] == 512 and full["l1"]["l1_size_gb"] == 1
    assert full["http_config"] == {"http_host": "0.0.0.0", "http_port": 8181, "http_socket_path": None}
    assert full["runtime_plugin_extra_config"] == extra  # where LMCache 0.5.6's plugins read it
    for prefix in ("LMCACHE_RUNTIME_PLUGIN_", "LMCACHE_PLUGIN_"):
        assert env[f"{prefix}CONFIG"] == env["LMCACHE_RUNTIME_PLUGIN_CONFIG"]
        assert (env[f"{prefix}ROLE"], env[f"{prefix}WORKER_COUNT"], env[f"{prefix}WORKER_ID"]) == (
            "",
            "1",
            "0",
        )


def test_no_locations_no_supervisor_and_the_container_checks_at_start_up(tmp_path: Path) -> None:
    assert ServerContainer(config=server()).plugins() is None
    f = _files(tmp_path)
    container = ServerContainer(config=server(["--runtime-plugin-locations", str(f["py"]), str(f["txt"])]))
    with pytest.raises(ConfigError, match=r"README\.md"):
        container.plugins()
    supervisor = ServerContainer(
        config=server(["--runtime-plugin-locations", str(f["py"]), "--runtime-plugin-max-restarts", "2"])
    ).plugins()
    assert supervisor is not None and supervisor.max_restarts == 2
    assert supervisor.status() == [
        {
            "name": "beat.py",
            "path": str(f["py"]),
            "pid": None,
            "state": "pending",
            "restarts": 0,
            "crashes": 0,
            "last_exit_code": None,
        }
    ]
