"""A real coordinator process: registration, heartbeats, expiry after --instance-timeout, graceful stop."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.coordinator.conftest import CoordinatorProcess


def test_register_heartbeat_expire_and_sigterm(coordinator: Callable[..., CoordinatorProcess]) -> None:
    coord = coordinator(instance_timeout=1.0, health_check_interval=0.1, eviction_check_interval=0)
    http = httpx.Client(base_url=coord.url, timeout=5)
    a = http.post("/instances", json={"instance_id": "a", "ip": "127.0.0.1", "http_port": 8001}).json()
    assert a == {"instance_id": "a", "re_registered": False}
    b = http.post("/instances", json={"instance_id": "", "ip": "127.0.0.1", "http_port": 8002}).json()
    assert b["instance_id"] and b["instance_id"] != "a"
    again = http.post("/instances", json={"instance_id": "a", "ip": "127.0.0.1", "http_port": 8001}).json()
    assert again["re_registered"] is True
    listed = {i["instance_id"]: i for i in http.get("/instances").json()["instances"]}
    assert set(listed) == {"a", b["instance_id"]}
    assert listed["a"]["http_port"] == 8001 and "last_heartbeat" in listed["a"]

    deadline = time.monotonic() + 1.8  # a heartbeats, b does not
    while time.monotonic() < deadline:
        assert http.put("/instances/a/heartbeat").status_code == 200
        time.sleep(0.2)
    assert [i["instance_id"] for i in http.get("/instances").json()["instances"]] == ["a"]
    assert http.put(f"/instances/{b['instance_id']}/heartbeat").status_code == 404

    assert http.delete("/instances/a").status_code == 204
    assert http.delete("/instances/a").status_code == 204  # idempotent
    assert http.get("/instances").json() == {"instances": []}
    metrics = http.get("/metrics").text
    assert "lmcache_coordinator_instances_expired_total 1.0" in metrics
    assert "lmcache_coordinator_instances 0.0" in metrics
    assert http.get("/healthz").json() == {"status": "healthy"}

    assert coord.stop(signal.SIGTERM) == 0
    log = coord.log()
    assert f"lmcache coordinator ready on http://127.0.0.1:{coord.port}" in log
    assert "lmcache coordinator stopped" in log


def test_sigint_also_stops_cleanly_and_a_busy_port_fails(
    coordinator: Callable[..., CoordinatorProcess],
) -> None:
    coord = coordinator()
    import subprocess
    import sys

    from tests.integration.coordinator.conftest import LAUNCH, REPO

    clash = subprocess.run(
        [sys.executable, "-c", LAUNCH, f'{{"host": "127.0.0.1", "port": {coord.port}}}'],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert clash.returncode == 1
    assert coord.stop(signal.SIGINT) == 0
