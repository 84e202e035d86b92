"""Client events -> coordinator usage -> quota -> fleet eviction through DELETE /l2 on a (fake) server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from lmcache.adapters.coordinator.client import CoordinatorClient
from lmcache.domain.units import GIB
from tests.integration.coordinator.conftest import make_key, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.coordinator.conftest import CoordinatorProcess, FakeL2Server

MIB = 1024 * 1024


def test_quota_drives_eviction_with_retry_and_exempts_salts_without_quota(
    coordinator: Callable[..., CoordinatorProcess], fake_server: Callable[[], FakeL2Server]
) -> None:
    coord = coordinator(eviction_check_interval=0.2, eviction_ratio=0.25, trigger_watermark=0.8)
    server = fake_server()
    server.fail_deletes = 1  # the first DELETE /l2 fails: its keys must be sent again next cycle
    client = CoordinatorClient(
        coord.url,
        "srv-1",
        server.port,
        advertise_ip="127.0.0.1",
        heartbeat_interval_s=0.2,
        l2_event_reporting=True,
        l2_event_flush_interval_s=0.1,
    )
    client.start()
    try:
        assert client.events is not None
        quota_keys = [make_key(i, "tenant") for i in range(40)]
        free_keys = [make_key(i, "free") for i in range(40)]
        for k in quota_keys + free_keys:
            server.objects[k] = MIB
            client.events.record_store(k, MIB)
        client.events.record_lookup(quota_keys[0])  # key 0 becomes the hottest
        wait_until(lambda: coord.get("/l2/status/tenant")["usage_gb"] * GIB == 40 * MIB)
        assert coord.get("/l2/status/free")["usage_gb"] * GIB == 40 * MIB

        limit_gb = 20 * MIB / GIB
        put = httpx.put(f"{coord.url}/l2/quota/tenant", json={"limit_gb": limit_gb})
        assert put.json() == {"cache_salt": "tenant", "limit_gb": limit_gb, "status": "ok"}
        wait_until(lambda: coord.get("/l2/status/tenant")["usage_gb"] * GIB < 0.8 * 20 * MIB, timeout=15)

        remaining = {k for k in server.objects if k.cache_salt == "tenant"}
        status = coord.get("/l2/status/tenant")
        assert status["quota_exists"] is True
        assert status["usage_gb"] * GIB == len(remaining) * MIB  # directory and shared L2 agree
        assert quota_keys[0] in remaining  # the hottest key survives the cold-end eviction
        assert all(k in server.objects for k in free_keys)  # no quota: never evicted
        assert server.delete_calls[0] == server.delete_calls[1] == 10  # failed batch resent whole
        metrics = httpx.get(f"{coord.url}/metrics").text
        assert "lmcache_coordinator_evictions_failed_total 1.0" in metrics
        assert "lmcache_coordinator_evictions_sent_total" in metrics

        usage = coord.get("/instances/srv-1/usage")
        assert usage["l2_count"] == len(remaining) + 40
        assert coord.get("/quota")["users"]["tenant"]["limit_gb"] == limit_gb
    finally:
        client.stop()
    assert coord.get("/instances") == {"instances": []}  # deregistered on stop
