"""Start-up resync through GET /l2/keys, checkpoints across restarts."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import httpx

from lmcache.adapters.coordinator.client import CoordinatorClient
from tests.integration.coordinator.conftest import free_port, make_key, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.integration.coordinator.conftest import CoordinatorProcess, FakeL2Server


def test_resync_then_checkpoint_restart_shows_the_same_usage(
    tmp_path: Path, coordinator: Callable[..., CoordinatorProcess], fake_server: Callable[[], FakeL2Server]
) -> None:
    server = fake_server()
    for i in range(2500):  # three pages of 1000
        server.objects[make_key(i, "t" if i % 2 else "")] = 1000 + i
    checkpoint = tmp_path / "state" / "coordinator.json"
    port = free_port()
    settings = {
        "enable_startup_resync": True,
        "resync_poll_interval": 0.1,
        "resync_max_wait": 10,
        "resync_page_size": 1000,
        "checkpoint_path": str(checkpoint),
        "checkpoint_interval": 60,
        "eviction_check_interval": 0,
    }
    coord = coordinator(port=port, **settings)
    client = CoordinatorClient(
        coord.url, "srv", server.port, advertise_ip="127.0.0.1", heartbeat_interval_s=0.2
    )
    client.start()
    try:
        expected_bytes = sum(server.objects.values())
        wait_until(lambda: coord.get("/directory/stats")["num_keys"] == 2500)
        stats = coord.get("/directory/stats")
        assert stats["l2_size_bytes"] == expected_bytes
        assert httpx.put(f"{coord.url}/quota/t", json={"limit_gb": 5}).status_code == 200
        before = coord.get("/l2/status")
        assert coord.stop(signal.SIGTERM) == 0
        saved = json.loads(checkpoint.read_text())
        assert saved["quotas"] == {"t": 5.0} and len(saved["keys"]) == 2500
        assert not list(checkpoint.parent.glob(".*.tmp"))  # the temp file was renamed away

        # restart from the checkpoint alone (no resync): same usage and quota
        coord = coordinator(port=port, **{**settings, "enable_startup_resync": False})
        assert coord.get("/l2/status") == before
        assert coord.get("/l2/quota/t") == {"cache_salt": "t", "limit_gb": 5.0, "exists": True}
        wait_until(lambda: client.registrations >= 2)  # 404 on heartbeat -> registered again
        assert [i["instance_id"] for i in coord.get("/instances")["instances"]] == ["srv"]
        assert coord.stop(signal.SIGTERM) == 0

        # the shared L2 changed while the coordinator was down: checkpoint + resync converge on it
        for i in range(0, 2500, 5):
            del server.objects[make_key(i, "t" if i % 2 else "")]
        coord = coordinator(port=port, **settings)
        wait_until(lambda: coord.get("/directory/stats")["num_keys"] == 2000)
        assert coord.get("/directory/stats")["l2_size_bytes"] == sum(server.objects.values())
        assert coord.get("/l2/quota/t")["exists"] is True
    finally:
        client.stop()


def test_corrupt_checkpoint_fails_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.integration.coordinator.conftest import LAUNCH, REPO

    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    config = {"host": "127.0.0.1", "port": free_port(), "checkpoint_path": str(bad)}
    run = subprocess.run(
        [sys.executable, "-c", LAUNCH, json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 1
    assert b"Cannot load checkpoint" in run.stdout + run.stderr
