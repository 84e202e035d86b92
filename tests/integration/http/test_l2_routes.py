"""L2 routes over real HTTP with an fs L2: key listing, deletion, the coordinator's prefetch, L2 objects."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.coordinator.servers import HttpFleetServers
from tests.integration.http.frontend import detail, frontend, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.http.frontend import Frontend


@pytest.fixture(scope="module")
def fe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontend]:
    base = tmp_path_factory.mktemp("fs-l2")
    spec = json.dumps({"type": "fs", "base_path": str(base)})
    with frontend("--l2-adapter", spec) as running:
        yield running


def _all_keys(fe: Frontend, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        query = {**params, **({"page_token": token} if token else {})}
        reply = fe.http.get("/l2/keys", params=query)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        items += body["keys"]
        token = body["next_page_token"]
        if token is None:
            return items


def _stored_in_l2(fe: Frontend, n: int, **params: Any) -> list[dict[str, Any]]:
    wait_for(lambda: len(_all_keys(fe, **params)) == n)
    return _all_keys(fe, **params)


def test_keys_are_listed_in_pages_with_sizes_and_filters(fe: Frontend) -> None:
    fe.store(1, salt="lister")
    fe.store(2, salt="lister")
    items = _stored_in_l2(fe, 4, cache_salt="lister", page_size=1)
    assert all(item["key"]["cache_salt"] == "lister" and item["key"]["model_name"] == "m" for item in items)
    assert all(item["bytes"] > 256 * 1024 for item in items)  # the object plus its header
    assert len({item["key"]["chunk_hash_hex"] for item in items}) == 4
    assert _all_keys(fe, cache_salt="lister", model_name="other") == []
    status = fe.http.get("/status").json()["storage_manager"]["l2_adapters"]
    assert status[0]["type"] == "fs" and status[0]["is_healthy"] is True
    assert status[0]["usage"]["objects"] >= 4
    objects = fe.http.get("/cache/objects", params={"tier": "l2", "cache_salt": "lister"}).json()
    assert sorted(o["key"]["chunk_hash_hex"] for o in objects["objects"]) == sorted(
        i["key"]["chunk_hash_hex"] for i in items
    )


def test_delete_removes_listed_keys_and_counts_missing_ones(fe: Frontend) -> None:
    fe.store(3, salt="deleter")
    items = _stored_in_l2(fe, 2, cache_salt="deleter")
    keys = [item["key"] for item in items]
    ghost = {**keys[0], "chunk_hash_hex": "00" * 32}
    reply = fe.http.request("DELETE", "/l2", json={"keys": [*keys, ghost]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"requested": 3, "deleted": 2, "missing": 1, "locked": 0}
    assert _all_keys(fe, cache_salt="deleter") == []
    again = fe.http.request("DELETE", "/l2", json={"keys": keys}).json()
    assert again["deleted"] == 0 and again["missing"] == 2


async def test_the_coordinator_client_reads_and_deletes_through_these_routes(fe: Frontend) -> None:
    fe.store(4, salt="coord")
    _stored_in_l2(fe, 2, cache_salt="coord")
    servers = HttpFleetServers(timeout_s=10)
    try:
        listed, token = [], None
        while True:
            page, token = await servers.list_keys(fe.server.http_url, 1000, token)
            listed += page
            if token is None:
                break
        ours = [key for key, nbytes in listed if key.cache_salt == "coord" and nbytes > 0]
        assert len(ours) == 2
        assert await servers.delete_keys(fe.server.http_url, ours) == 2
    finally:
        await servers.aclose()
    assert _all_keys(fe, cache_salt="coord") == []


def test_prefetch_loads_a_prefix_back_into_l1_and_keeps_it(fe: Frontend) -> None:
    tokens = fe.store(5, salt="warm")
    _stored_in_l2(fe, 2, cache_salt="warm")
    assert fe.http.post("/clear-cache").status_code == 200
    body = {
        "request_id": "pf-1",
        "model_name": "m",
        "world_size": 1,
        "token_ids": tokens,
        "cache_salt": "warm",
    }
    submitted = fe.http.post("/l2/prefetch", json=body)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["total_keys"] == 2
    wait_for(lambda: fe.http.get("/l2/prefetch/pf-1").json()["status"] == "completed")
    assert fe.http.get("/l2/prefetch/pf-1").json() == {
        "status": "completed",
        "found_keys": 2,
        "total_keys": 2,
    }
    in_l1 = fe.http.get("/cache/objects", params={"cache_salt": "warm"}).json()["objects"]
    assert len(in_l1) == 2 and all(o["readers"] == 0 for o in in_l1)  # kept, and its locks released


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "", "model_name": "m", "world_size": 1, "token_ids": []}, "request_id"),
        ({"request_id": "r", "model_name": "m", "world_size": 0, "token_ids": []}, "world_size"),
        ({"request_id": "r", "model_name": "m@x", "world_size": 1, "token_ids": []}, "model_name"),
        ({"request_id": "r", "model_name": "m", "world_size": 1, "token_ids": [-1]}, "token_ids"),
        ({"request_id": "r", "model_name": "m", "world_size": 1, "token_ids": "abc"}, "token_ids"),
        (
            {"request_id": "r", "model_name": "m", "world_size": 1, "token_ids": [], "cache_salt": "a/b"},
            "cache_salt",
        ),
        ({"model_name": "m", "world_size": 1, "token_ids": []}, "request_id"),
    ],
)
def test_prefetch_refuses_bad_bodies(fe: Frontend, body: dict[str, Any], field: str) -> None:
    reply = fe.http.post("/l2/prefetch", json=body)
    assert reply.status_code == 400
    assert field in detail(reply)


def test_prefetch_status_of_an_unknown_request_is_404(fe: Frontend) -> None:
    reply = fe.http.get("/l2/prefetch/never-submitted")
    assert reply.status_code == 404
    assert "never-submitted" in detail(reply)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 10_001}, "page_size"),
        ({"page_size": "x"}, "page_size"),
        ({"cache_salt": "a@b"}, "cache_salt"),
        ({"page_token": "not-ours"}, "page_token"),
    ],
)
def test_key_listing_refuses_bad_parameters(fe: Frontend, params: dict[str, Any], field: str) -> None:
    reply = fe.http.get("/l2/keys", params=params)
    assert reply.status_code == 400
    assert detail(reply).startswith(field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "keys"),
        ({"keys": "all"}, "keys"),
        ({"keys": [{"chunk_hash_hex": "0", "model_name": "m", "kv_rank": 1}]}, "keys[0].chunk_hash_hex"),
        ({"keys": [{"chunk_hash_hex": "00", "kv_rank": 1}]}, "model_name"),
        ({"keys": [{"chunk_hash_hex": "00", "model_name": "m", "kv_rank": 1, "cache_salt": "@"}]}, "keys[0]"),
        ({"keys": [{"chunk_hash_hex": "00", "model_name": "m", "kv_rank": 1}] * 10_001}, "keys"),
    ],
)
def test_delete_refuses_bad_bodies(fe: Frontend, body: dict[str, Any], field: str) -> None:
    reply = fe.http.request("DELETE", "/l2", json=body)
    assert reply.status_code == 400
    assert field in detail(reply)


def test_without_an_l2_tier_the_routes_say_so(tmp_path: Path) -> None:
    with frontend() as bare:
        listing = bare.http.get("/l2/keys")
        assert listing.status_code == 404 and "--l2-adapter" in detail(listing)
        key = {"chunk_hash_hex": "00", "model_name": "m", "kv_rank": 1}
        assert bare.http.request("DELETE", "/l2", json={"keys": [key]}).status_code == 404


def test_l2_objects_can_be_deleted_through_the_cache_routes(fe: Frontend) -> None:
    fe.store(6, salt="objdel")
    items = _stored_in_l2(fe, 2, cache_salt="objdel")
    body = {"tier": "l2", "keys": [item["key"] for item in items], "adapter": 0}
    reply = fe.http.request("DELETE", "/cache/objects", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "tier": "l2",
        "adapter": 0,
        "requested": 2,
        "deleted": 2,
        "missing": 0,
        "locked": 0,
    }
    assert _all_keys(fe, cache_salt="objdel") == []
    bad_listing = fe.http.get("/cache/objects", params={"tier": "l2", "adapter": 3})
    assert bad_listing.status_code == 400 and detail(bad_listing).startswith("adapter:")
    bad_delete = fe.http.request("DELETE", "/cache/objects", json={**body, "adapter": 1})
    assert bad_delete.status_code == 400 and detail(bad_delete).startswith("adapter:")
