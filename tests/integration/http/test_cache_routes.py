"""Cache routes over real HTTP: clearing L1, block checksums, paging through and deleting L1 objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.integration.http.frontend import BLOCKS, BLOCKS_PER_CHUNK, detail, frontend, md5_per_chunk
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend


@pytest.fixture(scope="module")
def fe() -> Iterator[Frontend]:
    with frontend() as running:
        yield running


def _objects(fe: Frontend, **params: object) -> dict[str, object]:
    reply = fe.http.get("/cache/objects", params=params)
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def test_checksums_match_an_independent_md5_of_the_engine_blocks(fe: Frontend) -> None:
    layers = [t.tensor for t in fe.engine.layers]
    body = {"block_ids": BLOCKS, "chunk_size": BLOCKS_PER_CHUNK, "instance_id": 1000, "layerwise": False}
    reply = fe.http.post("/cache/checksums", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["status"] == "success"
    assert answer["num_chunks"] == 2 and answer["chunk_size"] == BLOCKS_PER_CHUNK
    assert answer["block_id_ranges"] == [[8, 39]]
    assert answer["chunk_checksums"] == md5_per_chunk(layers, BLOCKS, BLOCKS_PER_CHUNK)
    # the digests follow the bytes: change one block of the second chunk only
    layers[0][:, 30] += 1
    again = fe.http.post("/cache/checksums", json=body).json()["chunk_checksums"]
    assert again[0] == answer["chunk_checksums"][0] and again[1] != answer["chunk_checksums"][1]
    assert again == md5_per_chunk(layers, BLOCKS, BLOCKS_PER_CHUNK)


def test_layerwise_checksums_digest_each_layer_alone(fe: Frontend) -> None:
    layers = [t.tensor for t in fe.engine.layers]
    body = {"block_ids": [1, 2, 3, 7], "chunk_size": 2, "instance_id": 1000, "layerwise": True}
    answer = fe.http.post("/cache/checksums", json=body).json()
    assert answer["block_id_ranges"] == [[1, 3], 7]
    assert answer["chunk_checksums"] == {
        f"layer_{i}": md5_per_chunk([layer], [1, 2, 3, 7], 2) for i, layer in enumerate(layers)
    }


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"block_ids": [1], "chunk_size": 16, "instance_id": 5}, 404, "instance_id 5 not registered"),
        ({"block_ids": [], "chunk_size": 16, "instance_id": 1000}, 400, "block_ids"),
        ({"block_ids": [1], "chunk_size": 0, "instance_id": 1000}, 400, "chunk_size"),
        ({"block_ids": [1, 64], "chunk_size": 16, "instance_id": 1000}, 400, "block_ids"),
        ({"block_ids": [-1], "chunk_size": 16, "instance_id": 1000}, 400, "block_ids"),
        ({"block_ids": "1,2", "chunk_size": 16, "instance_id": 1000}, 400, "block_ids"),
        ({"block_ids": [1], "chunk_size": 16, "instance_id": "x"}, 400, "instance_id"),
        ({"block_ids": [1], "layerwise": "yes", "instance_id": 1000, "chunk_size": 1}, 400, "layerwise"),
    ],
)
def test_checksums_refuse_bad_input_naming_the_field(
    fe: Frontend, body: dict[str, object], status: int, field: str
) -> None:
    reply = fe.http.post("/cache/checksums", json=body)
    assert reply.status_code == status
    assert field in detail(reply)


def test_checksums_refuse_a_body_that_is_not_json(fe: Frontend) -> None:
    reply = fe.http.post("/cache/checksums", content=b"{nope", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "JSON" in detail(reply)


def test_kvcache_check_is_the_checksum_query_as_a_get(fe: Frontend) -> None:
    layers = [t.tensor for t in fe.engine.layers]
    reply = fe.http.get("/kvcache/check", params={"instance_id": 1000, "block_ids": "8-39"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["chunk_checksums"] == md5_per_chunk(layers, BLOCKS, BLOCKS_PER_CHUNK)  # default 16
    mixed = fe.http.get("/kvcache/check", params={"instance_id": 1000, "block_ids": "1-3,7", "chunk_size": 4})
    assert mixed.json()["chunk_checksums"] == md5_per_chunk(layers, [1, 2, 3, 7], 4)
    for params, status, field in [
        ({"instance_id": 1000, "block_ids": "3-1"}, 400, "block_ids"),
        ({"instance_id": 1000, "block_ids": "a,b"}, 400, "block_ids"),
        ({"instance_id": "x", "block_ids": "1"}, 400, "instance_id"),
        ({"block_ids": "1"}, 400, "instance_id"),
        ({"instance_id": 7, "block_ids": "1"}, 404, "instance_id 7"),
    ]:
        bad = fe.http.get("/kvcache/check", params=params)
        assert bad.status_code == status, (params, bad.text)
        assert field in detail(bad)


def test_objects_page_through_l1_and_delete(fe: Frontend) -> None:
    fe.http.post("/clear-cache")
    pager = fe.store(11, salt="pager")
    other = fe.store(12)
    all_pages = []
    token = None
    while True:
        params: dict[str, object] = {"page_size": 1, "cache_salt": "pager"}
        if token is not None:
            params["page_token"] = token
        page = _objects(fe, **params)
        assert len(page["objects"]) <= 1  # type: ignore[arg-type]
        all_pages += page["objects"]  # type: ignore[operator]
        token = page["next_page_token"]
        if token is None:
            break
    assert len(all_pages) == 2
    first = all_pages[0]
    assert first["key"]["cache_salt"] == "pager" and first["key"]["model_name"] == "m"
    assert first["bytes"] >= 256 * 1024 and first["state"] == "ready" and first["readers"] == 0
    keys = [obj["key"] for obj in all_pages]
    deleted = fe.http.request("DELETE", "/cache/objects", json={"tier": "l1", "keys": [*keys, keys[0]]})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"tier": "l1", "requested": 2, "deleted": 2, "skipped": 0}
    assert _objects(fe, cache_salt="pager")["objects"] == []
    assert fe.hits(pager, "pager-after-delete", salt="pager") == 0
    assert fe.hits(other, "other-after-delete") == 2  # objects not listed stay


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tier": "l3"}, "tier"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 10001}, "page_size"),
        ({"page_size": "many"}, "page_size"),
        ({"page_token": "nope"}, "page_token"),
        ({"cache_salt": "a@b"}, "cache_salt"),
        ({"tier": "l2"}, "L2 adapter"),  # no L2 tier configured: 404
    ],
)
def test_objects_listing_refuses_bad_parameters(fe: Frontend, params: dict[str, object], field: str) -> None:
    reply = fe.http.get("/cache/objects", params=params)
    assert reply.status_code in (400, 404)
    assert field in detail(reply)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tier": "l1"}, "keys"),
        ({"tier": "l9", "keys": []}, "tier"),
        ({"keys": [{"chunk_hash_hex": "ABC", "model_name": "m", "kv_rank": 1}]}, "keys[0].chunk_hash_hex"),
        ({"keys": [{"chunk_hash_hex": "00", "model_name": "m@", "kv_rank": 1}]}, "keys[0]"),
        ({"keys": [{"chunk_hash_hex": "00", "model_name": "m", "kv_rank": -1}]}, "keys[0].kv_rank"),
        ({"keys": [{"chunk_hash_hex": "00", "model_name": "m", "kv_rank": 1}] * 10001}, "keys"),
    ],
)
def test_objects_delete_refuses_bad_bodies(fe: Frontend, body: dict[str, object], field: str) -> None:
    reply = fe.http.request("DELETE", "/cache/objects", json=body)
    assert reply.status_code == 400
    assert field in detail(reply)


def test_clear_routes(fe: Frontend) -> None:
    fe.http.post("/clear-cache")
    tokens = fe.store(21)
    assert len(_objects(fe)["objects"]) == 2  # type: ignore[arg-type]
    reply = fe.http.post("/cache/clear", json={"tier": "l1"})
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok" and reply.json()["cleared"] == {"tier": "l1"}
    assert reply.json()["removed_objects"] == 2
    assert fe.hits(tokens, "after-clear") == 0
    fe.store(21)
    assert fe.hits(tokens, "locks-them") == 2  # the lookup's read locks stay until retrieve or TTL
    assert fe.http.post("/cache/clear").json()["removed_objects"] == 0  # body optional; locked ones stay
    forced = fe.http.post("/clear-cache")
    assert forced.status_code == 200 and forced.json()["status"] == "ok"
    assert forced.json()["removed_objects"] == 2
    assert _objects(fe)["objects"] == []
    for body, field in [({"tier": "l2"}, "tier"), ({"force": "yes"}, "force"), ([1], "body")]:
        bad = fe.http.post("/cache/clear", json=body)
        assert bad.status_code == 400, body
        assert field in detail(bad)


def test_checksums_need_the_lmcache_driven_path() -> None:
    with run_server("--supported-transfer-mode", "engine_driven") as server:
        body = {"block_ids": [1], "chunk_size": 16, "instance_id": 1000}
        reply = httpx.post(f"{server.http_url}/cache/checksums", json=body, timeout=10)
        assert reply.status_code == 501
        assert "lmcache_driven" in detail(reply)
