"""Every route of coordinator-api.md, in process (Litestar TestClient).

The prefetch fan-out reaches a fake server over loopback.
"""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient

from lmcache.app.config import CoordinatorConfig
from lmcache.app.coordinator_container import CoordinatorContainer
from tests.integration.coordinator.conftest import encode, make_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.integration.coordinator.conftest import FakeL2Server


@pytest.fixture
def client() -> Iterator[TestClient[Any]]:
    config = CoordinatorConfig(
        enable_startup_resync=False,
        health_check_interval=0,
        eviction_check_interval=0,
        blend_chunk_size=4,
    )
    with TestClient(CoordinatorContainer(config=config).app()) as c:
        yield c


def b64_u32(tokens: list[int]) -> str:
    return base64.b64encode(struct.pack(f"<{len(tokens)}I", *tokens)).decode()


def test_quota_routes_and_aliases(client: TestClient[Any]) -> None:
    assert client.get("/l2/quota/t").json() == {"cache_salt": "t", "limit_gb": None, "exists": False}
    assert client.put("/l2/quota/t", json={"limit_gb": 1.5}).json()["status"] == "ok"
    assert client.put("/quota/_default", json={"limit_gb": 2}).json()["cache_salt"] == "_default"
    assert client.get("/quota/t").json() == {
        "cache_salt": "t",
        "limit_gb": 1.5,
        "current_usage_gb": 0.0,
        "exists": True,
    }
    assert set(client.get("/quota").json()["users"]) == {"t", "_default"}
    assert client.delete("/quota/t").json() == {"cache_salt": "t", "status": "removed"}
    assert client.delete("/l2/quota/t").json() == {"cache_salt": "t", "status": "not_found"}
    bad = client.put("/l2/quota/t", json={"limit_gb": -1})
    assert bad.status_code == 400 and "limit_gb" in bad.text
    assert client.put("/l2/quota/t", json={"limit_gb": "x"}).status_code == 400
    assert client.put("/l2/quota/t", json={}).status_code == 400
    status = client.get("/l2/status").json()
    assert status["total_gb"] == 0.0
    assert status["by_cache_salt"] == [
        {"cache_salt": "_default", "quota_limit_gb": 2.0, "quota_exists": True, "usage_gb": 0.0}
    ]


def test_events_status_usage_and_directory(client: TestClient[Any]) -> None:
    client.post("/instances", json={"instance_id": "a", "ip": "127.0.0.1", "http_port": 1})
    events = [{"type": "store", "key": encode(make_key(i, "t")), "bytes": 1 << 20} for i in range(4)]
    batch = {"instance_id": "a", "seq": 1, "events": events}
    assert client.post("/l2/events", json=batch).json() == {"recorded": 4, "duplicates": 0}
    assert client.post("/l2/events", json=batch).json() == {"recorded": 0, "duplicates": 4}
    delete = {"instance_id": "a", "seq": 2, "events": [{"type": "delete", "key": encode(make_key(0, "t"))}]}
    assert client.post("/l2/events", json=delete).json()["recorded"] == 1
    assert client.get("/l2/status/t").json()["usage_gb"] == 3 / 1024
    assert client.get("/instances/a/usage").json()["l2_count"] == 3
    assert client.get("/instances/usage").json()["instances"][0]["l2_size_bytes"] == 3 << 20
    assert client.get("/instances/nobody/usage").status_code == 404
    stats = client.get("/directory/stats").json()
    assert stats["num_keys"] == stats["l2_count"] == 3 and stats["l2_size_bytes"] == 3 << 20
    page = client.get("/directory/keys", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and len(page["keys"]) == 1
    assert page["keys"][0]["key"] == encode(make_key(2, "t"))
    bad = {
        "instance_id": "a",
        "seq": 3,
        "events": [{"type": "store", "key": {"model_name": "m", "kv_rank": 1}}],
    }
    answer = client.post("/l2/events", json=bad)
    assert answer.status_code == 400 and "chunk_hash_hex" in answer.text
    bad_type = {"instance_id": "a", "seq": 3, "events": [{"type": "nope", "key": encode(make_key(1))}]}
    assert client.post("/l2/events", json=bad_type).status_code == 400
    bad_salt = {
        "instance_id": "a",
        "seq": 3,
        "events": [{"type": "store", "key": {**encode(make_key(1)), "cache_salt": "a/b"}}],
    }
    answer = client.post("/l2/events", json=bad_salt)
    assert answer.status_code == 400 and "events[0].key" in answer.text
    assert client.post("/l2/events", json={**batch, "seq": 0}).status_code == 400


def test_blend_directory_routes(client: TestClient[Any]) -> None:
    s = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]
    ranges = [{"model_scope": "m@", "tokens": s, "object_keys": ["h0", "h1", "h2"], "old_st_base": 0}]
    assert client.post("/blend/fingerprints", json={"ranges": ranges}).json() == {"inserted": 3}
    assert client.post("/blend/fingerprints", json={"ranges": ranges}).json() == {"inserted": 0}
    query = [99, 98, 30, 31, 32, 33, 20, 21, 22, 23, 5]
    found = client.post("/blend/match", json={"model_scope": "m@", "tokens_b64": b64_u32(query)}).json()
    assert found == {
        "matches": [
            {"object_key": "h2", "old_st": 8, "cur_st": 2},
            {"object_key": "h1", "old_st": 4, "cur_st": 6},
        ]
    }
    u64 = base64.b64encode(struct.pack(f"<{len(query)}Q", *query)).decode()
    assert client.post("/blend/match", json={"model_scope": "m@", "tokens_u64_b64": u64}).json() == found
    legacy = client.post(
        "/directory/blend-lookup",
        json={"tokens_b64": b64_u32(query), "model_name": "m", "cache_salt": "", "world_size": 1},
    ).json()
    assert legacy["matches"][0] == {"chunk_hash": "h2", "old_st": 8, "cur_st": 2}
    assert client.post("/blend/match", json={"model_scope": "m@"}).status_code == 400
    assert client.post("/blend/match", json={"model_scope": "m@", "tokens_b64": "abc"}).status_code == 400
    assert client.request("DELETE", "/blend/fingerprints", json={"object_keys": ["h2", "zz"]}).json() == {
        "removed": 1
    }
    assert client.get("/directory/stats").json()["blend_entries"] == 2


def test_prefetch_fan_out_to_a_named_server(
    client: TestClient[Any], fake_server: Callable[[], FakeL2Server]
) -> None:
    server = fake_server()
    client.post("/instances", json={"instance_id": "s1", "ip": "127.0.0.1", "http_port": server.port})
    body = {
        "instance_id": "s1",
        "model_name": "m",
        "world_size": 1,
        "token_ids": list(range(10)),
        "cache_salt": "",
    }
    submitted = client.post("/l2/prefetch", json=body).json()
    assert submitted["status"] == "submitted" and submitted["chunks"] == 2
    assert server.prefetches[submitted["request_id"]]["token_ids"] == list(range(10))
    done = client.get(f"/l2/prefetch/s1/{submitted['request_id']}").json()
    assert done == {"status": "completed", "found_keys": 2, "total_keys": 2}
    assert client.post("/l2/prefetch", json={**body, "token_ids": [1, 2]}).json()["status"] == "noop"
    assert client.post("/l2/prefetch", json={**body, "instance_id": "ghost"}).status_code == 404
    assert client.get("/l2/prefetch/s1/unknown").status_code == 404
    server.stop()
    assert client.post("/l2/prefetch", json=body).status_code == 502
