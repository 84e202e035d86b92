"""Runtime plugins under a real server: environment, crash restarts with backoff, /status, no survivors.

No plugin outlives the server: on SIGTERM, on SIGTERM while the plugins start, on SIGKILL of the server.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from benchmarks.server_process import ServerProcess

from tests.integration.server.conftest import READY, run_server

EXTRA = {"plugin.test.key": "value", "n": 3}
LONG = """
import json, os, sys, time
out = sys.argv[0] + f".{os.getpid()}.json"
env = {k: os.environ.get(k) for k in ("LMCACHE_RUNTIME_PLUGIN_CONFIG", "LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG")}
open(out + ".tmp", "w").write(json.dumps(env)); os.replace(out + ".tmp", out)
print("long plugin up", flush=True)
while True:
    time.sleep(0.2)
"""
CRASH = LONG.replace(
    'print("long plugin up", flush=True)', 'print("crash plugin fails", flush=True)'
).replace("while True:\n    time.sleep(0.2)", "sys.exit(3)")
STUBBORN = """#!/bin/sh
trap '' TERM
echo "$$" > "$0.$$.pid"
while :; do sleep 0.2; done
"""


def _plugins(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "crash.py").write_text(CRASH)
    (d / "long.py").write_text(LONG)
    (d / "stubborn.sh").write_text(STUBBORN)
    (d / "stubborn.sh").chmod(0o755)
    return d


def _pids(d: Path, name: str) -> list[int]:
    return sorted(int(p.name.split(".")[-2]) for p in d.glob(f"{name}.*.json")) + sorted(
        int(p.name.split(".")[-2]) for p in d.glob(f"{name}.*.pid")
    )


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _all_dead(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


FLAGS = (
    "--runtime-plugin-config",
    json.dumps(EXTRA),
    "--runtime-plugin-restart-backoff-seconds",
    "0.2",
    "--runtime-plugin-max-restarts",
    "3",
    "--runtime-plugin-stop-grace-seconds",
    "1",
)


def test_plugins_get_the_config_crashes_are_restarted_and_counted_and_none_survives(tmp_path: Path) -> None:
    d = _plugins(tmp_path)
    with run_server("--runtime-plugin-locations", str(d), *FLAGS) as server:
        _wait(lambda: len(_pids(d, "crash.py")) >= 4 and _pids(d, "long.py") and _pids(d, "stubborn.sh"))
        for name in ("crash.py", "long.py"):
            env = json.loads(next(d.glob(f"{name}.*.json")).read_text())
            assert json.loads(env["LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG"]) == EXTRA
            config = json.loads(env["LMCACHE_RUNTIME_PLUGIN_CONFIG"])
            assert config["runtime_plugin_extra_config"] == EXTRA and config["l1"]["eviction_policy"] == "LRU"
            assert config["http_config"]["http_port"] == int(server.http_url.rsplit(":", 1)[1])

        def crash_gave_up() -> bool:
            status = httpx.get(server.http_url + "/status", timeout=5).json()["runtime_plugins"]
            return next(p for p in status if p["name"] == "crash.py")["state"] == "failed"

        _wait(crash_gave_up)
        status = {
            p["name"]: p for p in httpx.get(server.http_url + "/status", timeout=5).json()["runtime_plugins"]
        }
        assert status["crash.py"]["restarts"] == 3 and status["crash.py"]["crashes"] == 4
        assert status["crash.py"]["last_exit_code"] == 3 and status["crash.py"]["pid"] is None
        assert status["long.py"]["state"] == "running" and status["long.py"]["pid"] == _pids(d, "long.py")[0]
        assert status["stubborn.sh"]["state"] == "running" and status["stubborn.sh"]["restarts"] == 0
        assert len(_pids(d, "crash.py")) == 4
        server.wait_for_log(r"\[long\.py\] long plugin up")
        server.wait_for_log(r"Runtime plugin crash\.py exited with code 3; restarting in 0\.4 s")
        server.wait_for_log(r"Runtime plugin crash\.py exited with code 3; gave up after 3 restarts")
        pids = _pids(d, "crash.py") + _pids(d, "long.py") + _pids(d, "stubborn.sh")
        assert _alive(_pids(d, "long.py")[0]) and _alive(_pids(d, "stubborn.sh")[0])
    assert _all_dead(pids)
    assert "stubborn.sh ignored SIGTERM; killing it" in server.log()


def _start(d: Path, *flags: str) -> ServerProcess:
    return ServerProcess("--runtime-plugin-locations", str(d), *FLAGS, *flags).start(wait=False)


def _finish(server: ServerProcess) -> tuple[int | None, str]:
    return server.stop(), server.log()


def test_sigterm_while_the_plugins_start_leaves_none_behind(tmp_path: Path) -> None:
    d = _plugins(tmp_path)
    server = _start(d)
    try:
        _wait(lambda: _pids(d, "crash.py") or _pids(d, "long.py"), 60)  # the first plugin is up
        server.kill(signal.SIGTERM)
    finally:
        code, log = _finish(server)
    assert code == 0, log
    assert _all_dead(_pids(d, "crash.py") + _pids(d, "long.py") + _pids(d, "stubborn.sh")), log


@pytest.mark.parametrize("delay_s", [0.0, 0.5])
def test_sigterm_during_server_start_up_leaves_no_plugin(tmp_path: Path, delay_s: float) -> None:
    d = _plugins(tmp_path)
    server = _start(d)
    time.sleep(delay_s)  # before (or while) the server starts: plugins start only after the ready line
    server.kill(signal.SIGTERM)
    code, log = _finish(server)
    pids = _pids(d, "crash.py") + _pids(d, "long.py") + _pids(d, "stubborn.sh")
    assert code in (0, -signal.SIGTERM), log
    assert _all_dead(pids), log
    if READY not in log:
        assert not pids


def test_a_killed_server_takes_its_plugins_along(tmp_path: Path) -> None:
    d = _plugins(tmp_path)
    server = _start(d)
    try:
        _wait(lambda: _pids(d, "long.py") and _pids(d, "stubborn.sh"), 60)
    finally:
        server.kill()  # no shutdown path at all: the kernel's parent-death signal stops the plugins
        _finish(server)
    assert _all_dead(_pids(d, "long.py") + _pids(d, "stubborn.sh"))


def test_the_example_heartbeat_plugin_posts_the_servers_state(tmp_path: Path) -> None:
    beats: list[dict[str, object]] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            beats.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    extra = {"plugin.heartbeat.url": f"http://127.0.0.1:{sink.server_address[1]}/hb"}
    example = Path(__file__).parents[3] / "examples" / "runtime_plugins" / "heartbeat.py"
    try:
        flags = ("--runtime-plugin-locations", str(example), "--runtime-plugin-config", json.dumps(extra))
        with run_server(*flags, "--instance-id", "beating-heart") as server:
            _wait(lambda: beats)
            server.wait_for_log(r"\[heartbeat\.py\] posting heartbeats of http://127\.0\.0\.1:\d+ to ")
    finally:
        sink.shutdown()
    beat = beats[0]
    assert beat["instance_id"] == "beating-heart" and beat["healthy"] is True
    assert 0.99 * 0.05 * 2**30 < beat["l1_total_bytes"] <= 0.05 * 2**30 and beat["l1_used_bytes"] == 0  # type: ignore[operator]
