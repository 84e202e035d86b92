"""A real `lmcache server` reporting its L2 events to a real coordinator: stores, then deletes.

Objects stored through the server's ZMQ API reach the coordinator as `store` events; objects deleted
through the server's `DELETE /l2` (the route the coordinator's fleet eviction calls) and through
`DELETE /cache/objects` on the L2 tier reach it as `delete` events, so its directory and per-salt usage
drop. The server's metrics export the reporter's drop counter.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from tests.integration.coordinator.conftest import decode, encode, make_key, wait_until
from tests.integration.server.conftest import CHUNK_BYTES, Engine, key, run_server, tokens_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.keys import ObjectKey
    from tests.integration.coordinator.conftest import CoordinatorProcess

SALT = "tenant-del"
BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 2 L2 objects per store
MOCK_L2 = json.dumps({"type": "mock", "max_size_gb": 0.5, "mock_bandwidth_gb": 50})


def directory(coord: CoordinatorProcess) -> dict[ObjectKey, dict[str, Any]]:
    rows = coord.get("/directory/keys?limit=10000")["keys"]
    return {decode(row["key"]): row for row in rows}


def test_server_reports_l2_deletes_to_the_coordinator(
    coordinator: Callable[..., CoordinatorProcess],
) -> None:
    coord = coordinator(eviction_check_interval=0, health_check_interval=0)
    flags = (
        "--instance-id",
        "srv-del",
        "--l2-adapter",
        MOCK_L2,
        "--coordinator-url",
        coord.url,
        "--coordinator-advertise-ip",
        "127.0.0.1",
        "--coordinator-heartbeat-interval",
        "0.2",
        "--coordinator-l2-event-reporting",
        "--coordinator-l2-event-flush-interval",
        "0.1",
    )
    with run_server(*flags) as server, server.client() as client:
        engine = Engine(client)
        engine.register()
        try:
            for seq in range(3):
                rid = f"put-{seq}"
                assert client.store(key(tokens_for(seq), rid, end=512, salt=SALT), 1000, [BLOCKS])[1]
                client.end_session(rid)
            rows = wait_until(lambda: len(d := directory(coord)) == 6 and d, timeout=15)
            assert {r["instance_id"] for r in rows.values()} == {"srv-del"}
            assert {r["bytes"] for r in rows.values()} == {CHUNK_BYTES}
            assert coord.get("/directory/stats")["l2_size_bytes"] == 6 * CHUNK_BYTES
            stored = sorted(rows)

            # DELETE /l2, as the coordinator's eviction sends it: two present keys and one unknown key.
            unknown = make_key(999, SALT)
            body: dict[str, Any] = {"keys": [encode(k) for k in (stored[0], stored[1], unknown)]}
            answer = httpx.request("DELETE", f"{server.http_url}/l2", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"requested": 3, "deleted": 2, "missing": 1, "locked": 0}
            wait_until(lambda: directory(coord).keys() == set(stored[2:]), timeout=10)
            assert coord.get("/directory/stats")["l2_size_bytes"] == 4 * CHUNK_BYTES
            usage = coord.get(f"/l2/status/{SALT}")["usage_gb"]
            assert abs(usage * 2**30 - 4 * CHUNK_BYTES) < 1  # per-salt usage dropped by the stored sizes

            # DELETE /cache/objects on the L2 tier deletes through the same path.
            body = {"keys": [encode(stored[2])], "tier": "l2", "adapter": 0}
            answer = httpx.request("DELETE", f"{server.http_url}/cache/objects", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["deleted"] == 1
            wait_until(lambda: directory(coord).keys() == set(stored[3:]), timeout=10)
            assert coord.get("/directory/stats")["l2_size_bytes"] == 3 * CHUNK_BYTES
            assert coord.get("/instances/srv-del/usage")["l2_count"] == 3

            # The server's L2 agrees with the coordinator, and nothing was dropped on the way.
            listed = httpx.get(f"{server.http_url}/l2/keys", timeout=10).json()["keys"]
            assert {decode(item["key"]) for item in listed} == set(stored[3:])
            metrics = httpx.get(f"{server.http_url}/metrics", timeout=10).text
            assert "lmcache_mp_coordinator_l2_events_dropped_total 0.0" in metrics
            client.unregister_kv_cache(1000)
        finally:
            engine.close()
