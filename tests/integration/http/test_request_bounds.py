"""Every input bounded and every mistake a 4xx naming the field (issue 18).

The requests that made 500s, hogged memory or reset the connection, unknown fields, and the OpenAPI schema
the fuzzer reads.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.integration.http.frontend import detail, frontend

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend


@pytest.fixture(scope="module")
def fe() -> Iterator[Frontend]:
    with frontend() as running:
        yield running


def _status(fe: Frontend) -> dict[str, Any]:
    body: dict[str, Any] = fe.http.get("/status").json()
    return body


@pytest.mark.parametrize("limit", [b"1e308", b"1e300", b"1" + b"0" * 400, b"1048577"])
def test_quota_limits_beyond_any_host_are_400(fe: Frontend, limit: bytes) -> None:
    reply = fe.http.put("/quota/t2", content=b'{"limit_gb": ' + limit + b"}")
    assert reply.status_code == 400, reply.text
    assert detail(reply).startswith("limit_gb:")
    assert fe.http.put("/quota/t2", json={"limit_gb": 1048576}).status_code == 200


def test_a_cursor_beyond_any_index_is_400(fe: Frontend) -> None:
    for token in ("9223372036854775807", "9" * 5000, "-1"):
        reply = fe.http.get("/cache/objects", params={"tier": "l1", "page_token": token})
        assert reply.status_code == 400 and detail(reply).startswith("page_token:"), reply.text


def test_checksum_requests_are_capped(fe: Frontend) -> None:
    too_many = fe.http.post(
        "/cache/checksums", json={"instance_id": 1000, "block_ids": [0] * 65, "chunk_size": 16}
    )
    assert too_many.status_code == 400 and "engine's pool" in detail(too_many)  # the fake engine has 64
    huge = fe.http.post(
        "/cache/checksums", json={"instance_id": 1000, "block_ids": [0] * 70_000, "chunk_size": 1}
    )
    assert huge.status_code == 400 and detail(huge).startswith("block_ids"), huge.text
    ok = fe.http.post(
        "/cache/checksums", json={"instance_id": 1000, "block_ids": list(range(64)), "chunk_size": 16}
    )
    assert ok.status_code == 200 and len(ok.json()["chunk_checksums"]) == 4


@pytest.mark.parametrize(
    ("method", "path", "body", "named"),
    [
        ("POST", "/cache/clear", {"tier": "l1", "forse": True}, "forse"),
        ("PUT", "/quota/t3", {"limit_gb": 1, "limit": 2}, "limit"),
        (
            "POST",
            "/l2/prefetch",
            {"request_id": "r", "model_name": "m", "world_size": 1, "token_ids": [], "x": 1},
            "x",
        ),
        ("POST", "/cache/checksums", {"instance_id": 1000, "block_ids": [1], "zzz": 1}, "zzz"),
        (
            "DELETE",
            "/cache/objects",
            {"keys": [{"chunk_hash_hex": "00", "model_name": "m", "kv_rank": 0, "e": 1}]},
            "keys[0].e",
        ),
        ("DELETE", "/l2", {"keys": [], "force": True}, "force"),
    ],
)
def test_unknown_fields_are_400_naming_them(
    fe: Frontend, method: str, path: str, body: dict[str, Any], named: str
) -> None:
    fe.store(51)
    before = _status(fe)["storage_manager"]["l1_manager"]["total_object_count"]
    reply = fe.http.request(method, path, json=body)
    assert reply.status_code == 400, reply.text
    assert detail(reply) == f"{named}: unknown field"
    assert _status(fe)["storage_manager"]["l1_manager"]["total_object_count"] == before
    assert fe.http.get("/quota/t3").json()["exists"] is False


def test_clear_cache_refuses_a_body(fe: Frontend) -> None:
    fe.store(52)
    reply = fe.http.post("/clear-cache", content=b"\x00garbage" * 100_000)
    assert reply.status_code == 400 and detail(reply).startswith("body:")
    assert _status(fe)["storage_manager"]["l1_manager"]["total_object_count"] > 0
    for empty in (b"", b"{}", b"null"):
        assert fe.http.post("/clear-cache", content=empty).status_code == 200


def test_an_overlong_query_string_is_answered_414_not_reset(fe: Frontend) -> None:
    url = urlsplit(fe.server.http_url)
    for size in (20_000, 200_000):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(b"GET /cache/objects?x=" + b"A" * size + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 414 "), size
    assert fe.http.get("/healthcheck").status_code == 200


def test_the_openapi_schema_documents_every_route_and_its_bounds(fe: Frontend) -> None:
    schema = fe.http.get("/schema/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/cache/clear",
        "/cache/checksums",
        "/cache/objects",
        "/clear-cache",
        "/l2",
        "/l2/keys",
        "/l2/prefetch",
        "/quota/{cache_salt}",
        "/status",
    }
    quota = schema["paths"]["/quota/{cache_salt}"]["put"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert quota["additionalProperties"] is False and quota["properties"]["limit_gb"]["maximum"] == 1 << 20
    text = str(schema["components"])
    assert "'maxItems': 65536" in text and "'maxItems': 10000" in text
