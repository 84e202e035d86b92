"""The coordinator's loop intervals: 0 disables a loop; the checkpoint is written periodically while running.

The interval tests run the real `CoordinatorService` in process on a fake clock (heartbeat expiry reads
it), with the checkpoint loop on a short real interval as the witness that time passed and loops ran: a
disabled loop must have done nothing by the time the checkpoint loop ran several times, while the same
setup with the loop enabled does its work. The periodic checkpoint is checked on a real coordinator
process, with the file read while the process still runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from dependency_injector import providers

from lmcache.app.config import CoordinatorConfig
from lmcache.app.coordinator_container import CoordinatorContainer, settings_from_config
from tests.fakes.clock import FakeClock
from tests.integration.coordinator.conftest import encode, free_port, make_key, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from lmcache.adapters.coordinator.service import CoordinatorService
    from lmcache.adapters.coordinator.settings import CoordinatorSettings
    from tests.integration.coordinator.conftest import CoordinatorProcess

WITNESS_INTERVAL = 0.05  # the checkpoint loop: proves the runtime's loops get to run
WITNESS_RUNS = 4


def sample(runtime: CoordinatorService, name: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def run_until_witnessed(runtime: CoordinatorService, done: Callable[[], bool] = lambda: False) -> None:
    """Start the runtime and let it run until the checkpoint loop ran WITNESS_RUNS times and `done()`."""
    await runtime.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sample(runtime, "lmcache_coordinator_checkpoints_total") < WITNESS_RUNS or not done():
            assert loop.time() < deadline, "the coordinator's loops did not run within 10 s"
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop()


def service(settings: CoordinatorSettings, clock: FakeClock) -> CoordinatorService:
    """The real service, built by the composition root over these settings and clock."""
    container = CoordinatorContainer(config=CoordinatorConfig())
    container.settings.override(providers.Object(settings))
    container.clock.override(providers.Object(clock))
    runtime: CoordinatorService = container.runtime()
    return runtime


def settings(tmp_path: Path, health: float, eviction: float) -> CoordinatorSettings:
    config = CoordinatorConfig(
        instance_timeout=1.0,
        health_check_interval=health,
        eviction_check_interval=eviction,
        enable_startup_resync=False,
        checkpoint_path=tmp_path / "state.json",
        checkpoint_interval=WITNESS_INTERVAL,
    )
    return settings_from_config(config, server_timeout=1.0)


@pytest.mark.parametrize("interval", [0, 0.02])
async def test_a_health_check_interval_of_0_disables_the_health_sweep(
    tmp_path: Path, interval: float
) -> None:
    clock = FakeClock()
    runtime = service(settings(tmp_path, health=interval, eviction=0), clock)
    runtime.state.register("stale", "127.0.0.1", free_port())
    clock.advance(60)  # far past --instance-timeout: any sweep drops it

    def expired() -> bool:
        return sample(runtime, "lmcache_coordinator_instances_expired_total") > 0

    await run_until_witnessed(runtime, done=expired if interval else lambda: True)
    if interval:
        assert "stale" not in runtime.state.registry
        assert "coordinator-health" in runtime.supervisor.health()
    else:
        assert "stale" in runtime.state.registry  # never swept
        assert not expired()
        assert set(runtime.supervisor.health()) == {"coordinator-checkpoint"}


@pytest.mark.parametrize("interval", [0, 0.02])
async def test_an_eviction_check_interval_of_0_disables_fleet_eviction(
    tmp_path: Path, interval: float
) -> None:
    runtime = service(settings(tmp_path, health=0, eviction=interval), FakeClock())
    # A live server that refuses connections: every eviction attempt is a counted failure.
    runtime.state.register("srv", "127.0.0.1", free_port())
    keys = [make_key(i, "t") for i in range(10)]
    for k in keys:
        runtime.state.directory.store(k, 1 << 20, "srv")
    runtime.state.quotas.set("t", 1 / 1024)  # 1 MiB quota, 10 MiB used: far over the watermark

    def attempted() -> bool:
        return sample(runtime, "lmcache_coordinator_evictions_failed_total") > 0

    await run_until_witnessed(runtime, done=attempted if interval else lambda: True)
    if interval:
        assert "coordinator-eviction" in runtime.supervisor.health()
    else:
        assert not attempted()
        assert sample(runtime, "lmcache_coordinator_evictions_sent_total") == 0
        assert runtime.state.directory.keys() == set(keys)
        assert "coordinator-eviction" not in runtime.supervisor.health()


def test_the_checkpoint_is_written_periodically_while_running(
    tmp_path: Path, coordinator: Callable[..., CoordinatorProcess]
) -> None:
    path = tmp_path / "ckpt" / "coordinator.json"
    coord = coordinator(checkpoint_path=str(path), checkpoint_interval=0.2, eviction_check_interval=0)
    assert coord.proc is not None

    def saved() -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):  # not written yet (the rename makes a torn read impossible)
            return None

    def post(seq: int, kind: str, n: int) -> None:
        event = {"type": kind, "key": encode(make_key(n, "t")), "bytes": 4096}
        body = {"instance_id": "srv", "seq": seq, "events": [event]}
        assert httpx.post(f"{coord.url}/l2/events", json=body, timeout=5).json()["recorded"] == 1

    post(1, "store", 1)
    post(2, "store", 2)
    assert httpx.put(f"{coord.url}/l2/quota/t", json={"limit_gb": 2}, timeout=5).status_code == 200
    # a tick may fall between the events and the quota: wait for the first checkpoint holding all three
    first = wait_until(
        lambda: (d := saved()) is not None and len(d["keys"]) == 2 and d["quotas"] == {"t": 2.0} and d,
        timeout=10,
    )
    assert first["quotas"] == {"t": 2.0}
    assert coord.proc.poll() is None  # written by the running coordinator, not at shutdown

    post(3, "delete", 1)  # later changes reach the file on a later tick
    wait_until(lambda: (d := saved()) is not None and len(d["keys"]) == 1, timeout=10)
    assert coord.proc.poll() is None
