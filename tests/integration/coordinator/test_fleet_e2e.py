"""A real coordinator and two real `lmcache server` processes sharing one fs L2 directory.

Membership (register, SIGKILL -> expiry after --instance-timeout, the survivor heartbeats on), L2 event
reporting into per-salt usage, quota-driven fleet eviction through the survivor's `DELETE /l2` until the
salt is under the watermark (the files are gone, a salt without quota is untouched), and a coordinator
restart that restores the same usage from its checkpoint and a resync of the live server's `GET /l2/keys`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lmcache.adapters.storage.object_format import parse_header, parse_key_name
from tests.integration.coordinator.conftest import decode, wait_until
from tests.integration.server.conftest import (
    CHUNK_BYTES,
    Engine,
    RunningServer,
    free_port,
    key,
    run_server,
    tokens_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from lmcache.domain.keys import ObjectKey
    from tests.integration.coordinator.conftest import CoordinatorProcess

INSTANCE_TIMEOUT = 2.0
HEARTBEAT = 0.2
EVICTION_INTERVAL = 0.3
RATIO = 0.25
WATERMARK = 0.8
BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 2 L2 objects per store
QUOTA_SALT, FREE_SALT = "tenant-a", "tenant-free"


def disk_keys(base: Path) -> set[ObjectKey]:
    """The keys of the object files in the fs L2 directory, read from their headers."""
    keys = set()
    for path in base.rglob("*.kv"):
        with path.open("rb") as f:
            keys.add(parse_key_name(parse_header(f.read(4096)).key_name.decode()))
    return keys


def directory(coord: CoordinatorProcess) -> dict[ObjectKey, dict[str, Any]]:
    """The coordinator's key directory: key -> {"bytes", "instance_id"}."""
    rows = coord.get("/directory/keys?limit=10000")["keys"]
    return {decode(row["key"]): row for row in rows}


def salt_keys(coord: CoordinatorProcess, salt: str) -> set[ObjectKey]:
    return {k for k in directory(coord) if k.cache_salt == salt}


@pytest.fixture
def spawn() -> Iterator[Callable[..., RunningServer]]:
    """Start `lmcache server` processes on free loopback ports; SIGTERM the ones still running at the end."""
    started: list[RunningServer] = []

    def start(*flags: str) -> RunningServer:
        server = RunningServer(*flags).start(wait=False)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_ready(server: RunningServer) -> None:
    server.wait_ready(timeout_s=60)


def instances(coord: CoordinatorProcess) -> dict[str, dict[str, Any]]:
    return {i["instance_id"]: i for i in coord.get("/instances")["instances"]}


def expected_count(count: int, per_key_gb: float, limit_gb: float) -> int:
    """Keys left after the spec's rule: while usage >= watermark x quota, drop ceil(ratio x count)."""
    while count and count * per_key_gb >= WATERMARK * limit_gb:
        count -= math.ceil(RATIO * count)
    return count


@pytest.mark.slow
def test_two_servers_one_shared_l2_membership_eviction_and_restart(
    tmp_path: Path,
    coordinator: Callable[..., CoordinatorProcess],
    spawn: Callable[..., RunningServer],
) -> None:
    l2_dir = tmp_path / "shared-l2"
    port = free_port()
    settings: dict[str, Any] = {
        "instance_timeout": INSTANCE_TIMEOUT,
        "health_check_interval": 0.1,
        "eviction_check_interval": EVICTION_INTERVAL,
        "eviction_ratio": RATIO,
        "trigger_watermark": WATERMARK,
        "checkpoint_path": str(tmp_path / "coordinator" / "state.json"),
        "checkpoint_interval": 60,
        "resync_poll_interval": 0.1,
        "resync_max_wait": 10,
    }
    coord = coordinator(port=port, **settings)

    def fleet_flags(instance_id: str, *extra: str) -> tuple[str, ...]:
        return (
            "--instance-id",
            instance_id,
            "--l2-adapter",
            json.dumps({"type": "fs", "base_path": str(l2_dir), "shared": True}),
            "--coordinator-url",
            coord.url,
            "--coordinator-advertise-ip",
            "127.0.0.1",
            "--coordinator-heartbeat-interval",
            str(HEARTBEAT),
            "--coordinator-l2-event-reporting",
            "--coordinator-l2-event-flush-interval",
            "0.1",
            *extra,
        )

    # Event reporting rides the domain's synchronous fan-out, so it works without any observability.
    a = spawn(*fleet_flags("server-a", "--disable-observability"))
    b = spawn(*fleet_flags("server-b"))
    wait_ready(a)
    wait_ready(b)

    # 1. Both register, with the HTTP port the coordinator calls back.
    fleet = wait_until(lambda: (m := instances(coord)).keys() == {"server-a", "server-b"} and m, timeout=10)
    assert {(i["ip"], i["http_port"]) for i in fleet.values()} == {
        ("127.0.0.1", int(s.http_url.rsplit(":", 1)[1])) for s in (a, b)
    }

    # 2. SIGKILL b: no deregistration, so it stays listed until its heartbeat lapses past the timeout.
    os.kill(b.proc.pid, signal.SIGKILL)
    assert b.proc.wait(10) == -signal.SIGKILL
    last_beat = instances(coord)["server-b"]["last_heartbeat"]  # still listed: nobody deregistered it
    beat = instances(coord)["server-a"]["last_heartbeat"]
    wait_until(lambda: "server-b" not in instances(coord), timeout=INSTANCE_TIMEOUT + 5)
    assert time.time() >= last_beat + INSTANCE_TIMEOUT - 0.05  # not before the timeout
    assert instances(coord)["server-a"]["last_heartbeat"] > beat  # a kept heartbeating meanwhile

    # 3. KV stored through a's ZMQ API fills the shared L2 and the coordinator's per-salt usage.
    with a.client() as client:
        engine = Engine(client)
        engine.register()
        for seq, salt in enumerate([QUOTA_SALT] * 8 + [FREE_SALT] * 2):
            rid = f"put-{seq}"
            assert client.store(key(tokens_for(seq), rid, end=512, salt=salt), 1000, [BLOCKS])[1]
            client.end_session(rid)
        wait_until(lambda: len(disk_keys(l2_dir)) == 20, timeout=15)
        stored = disk_keys(l2_dir)
        wait_until(lambda: directory(coord).keys() == stored, timeout=10)
        rows = directory(coord)
        assert {row["instance_id"] for row in rows.values()} == {"server-a"}
        assert {row["bytes"] for row in rows.values()} == {CHUNK_BYTES}  # store events carry the payload size
        status = coord.get(f"/l2/status/{QUOTA_SALT}")
        usage_gb = status["usage_gb"]
        assert status["quota_exists"] is False and usage_gb > 0
        free_before = salt_keys(coord, FREE_SALT)
        assert len(free_before) == 4

        # 4. A quota on the salt drives fleet eviction through a until usage is under the watermark.
        limit_gb = usage_gb * 0.75
        quota = httpx.put(f"{coord.url}/l2/quota/{QUOTA_SALT}", json={"limit_gb": limit_gb}, timeout=5)
        assert quota.status_code == 200, quota.text

        def under_watermark() -> bool:
            s = coord.get(f"/l2/status/{QUOTA_SALT}")
            return bool(s["usage_gb"] < WATERMARK * s["quota_limit_gb"])

        wait_until(under_watermark, timeout=15)
        time.sleep(3 * EVICTION_INTERVAL)  # further cycles must not evict more
        left = salt_keys(coord, QUOTA_SALT)
        assert len(left) == expected_count(16, usage_gb / 16, limit_gb) > 0
        assert salt_keys(coord, FREE_SALT) == free_before  # no quota: exempt
        evicted = stored - directory(coord).keys()
        assert len(evicted) == 16 - len(left)
        on_disk = disk_keys(l2_dir)
        assert on_disk == left | free_before and not (on_disk & evicted)  # the evicted files are gone

        # 5. Restart: checkpoint + resync from the live server restore the same usage and quota.
        before = coord.get("/l2/status")
        stats = coord.get("/directory/stats")
        assert coord.stop(signal.SIGTERM) == 0
        coord = coordinator(port=port, **settings, enable_startup_resync=True)
        resynced = f"L2 resync from server-a: {len(on_disk)} keys, 0 stale keys dropped"
        wait_until(lambda: resynced in coord.log(), timeout=15)  # a registered again on a 404
        assert coord.get("/l2/status") == before
        assert coord.get("/directory/stats") == stats
        assert directory(coord).keys() == on_disk
        assert coord.get(f"/l2/quota/{QUOTA_SALT}")["exists"] is True
        assert set(instances(coord)) == {"server-a"}  # b is not resurrected from the checkpoint
        client.unregister_kv_cache(1000)
        engine.close()

    # 6. A clean shutdown deregisters.
    assert a.stop() == 0, a.log()
    assert instances(coord) == {}


def test_a_server_whose_coordinator_is_down_serves_and_stops_promptly() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    flags = ("--coordinator-url", dead, "--coordinator-heartbeat-interval", "0.1")
    with run_server(*flags, "--coordinator-l2-event-reporting") as server, server.client() as client:
        assert client.ping() is True
        wait_until(lambda: f"Coordinator {dead} unreachable" in server.log(), timeout=10)
        began = time.monotonic()
        assert server.stop() == 0  # run_server checks the exit status again
        assert time.monotonic() - began < 15
