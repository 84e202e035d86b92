"""Quota routes over real HTTP (wire-protocol.md §7.2): round trip, usage in GB, bad input."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.integration.http.frontend import detail, frontend
from tests.integration.server.conftest import CHUNK_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.http.frontend import Frontend

GIB = 2**30


@pytest.fixture(scope="module")
def fe() -> Iterator[Frontend]:
    with frontend() as running:
        yield running


def test_quota_round_trip_with_usage(fe: Frontend) -> None:
    put = fe.http.put("/quota/tenant-a", json={"limit_gb": 0.04})  # the L1 here is 0.05 GiB
    assert put.status_code == 200
    assert put.json() == {"cache_salt": "tenant-a", "limit_gb": 0.04, "status": "ok"}
    fe.http.put("/quota/tenant-a", json={"limit_gb": 1.5})
    fe.store(1, salt="tenant-a")
    got = fe.http.get("/quota/tenant-a").json()
    assert got == {
        "cache_salt": "tenant-a",
        "limit_gb": 1.5,
        "current_usage_gb": 2 * CHUNK_BYTES / GIB,
        "exists": True,
    }
    assert fe.http.put("/quota/tenant-a", json={"limit_gb": 0}).json()["limit_gb"] == 0
    assert fe.http.get("/quota/tenant-a").json()["limit_gb"] == 0.0
    listed = fe.http.get("/quota").json()["users"]
    assert listed["tenant-a"] == {"limit_gb": 0.0, "current_usage_gb": 2 * CHUNK_BYTES / GIB}
    removed = fe.http.delete("/quota/tenant-a")
    assert removed.status_code == 200
    assert removed.json() == {"cache_salt": "tenant-a", "status": "removed"}
    assert fe.http.delete("/quota/tenant-a").json() == {"cache_salt": "tenant-a", "status": "not_found"}
    after = fe.http.get("/quota/tenant-a").json()
    assert after["exists"] is False and after["limit_gb"] is None
    assert fe.http.get("/quota").json()["users"]["tenant-a"]["limit_gb"] is None  # usage-only entry


def test_quota_larger_than_l1_is_accepted_with_a_warning(fe: Frontend) -> None:
    reply = fe.http.put("/quota/tenant-big", json={"limit_gb": 4})
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok" and body["limit_gb"] == 4
    assert body["warning"] == (
        "the quota of cache_salt 'tenant-big' (4.000 GiB) is larger than L1 (0.050 GiB): it never limits "
        "this salt; L1 fills up first"
    )
    fe.server.wait_for_log(r"WARNING: the quota of cache_salt 'tenant-big' \(4\.000 GiB\) is larger than L1")
    assert "warning" not in fe.http.put("/quota/tenant-big", json={"limit_gb": 0.049}).json()
    fe.http.delete("/quota/tenant-big")


def test_default_salt_is_spelled_underscore_default(fe: Frontend) -> None:
    assert fe.http.put("/quota/_default", json={"limit_gb": 2}).json()["cache_salt"] == "_default"
    assert fe.http.get("/quota/_default").json()["limit_gb"] == 2.0
    assert fe.http.get("/quota").json()["users"]["_default"]["limit_gb"] == 2.0
    assert fe.http.delete("/quota/_default").json()["status"] == "removed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"limit_gb": "abc"}', "limit_gb"),
        (b'{"limit_gb": -1}', "limit_gb"),
        (b'{"limit_gb": 1e999}', "limit_gb"),
        (b'{"limit_gb": Infinity}', "limit_gb"),
        (b'{"limit_gb": NaN}', "limit_gb"),
        (b'{"limit_gb": true}', "limit_gb"),
        (b'{"limit_gb": null}', "limit_gb"),
        (b"{}", "limit_gb"),
        (b"", "limit_gb"),
        (b"[1]", "limit_gb"),
        (b"{nope", "body"),
    ],
)
def test_bad_limits_are_400_naming_the_field(fe: Frontend, body: bytes, field: str) -> None:
    reply = fe.http.put("/quota/t", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert detail(reply).startswith(f"{field}:")
    assert fe.http.get("/quota/t").json()["exists"] is False


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_bad_salt_in_the_path_is_400(fe: Frontend, method: str) -> None:
    kwargs = {"json": {"limit_gb": 1}} if method == "PUT" else {}
    for salt in ("a@b", "x" * 129):
        reply = fe.http.request(method, f"/quota/{salt}", **kwargs)  # type: ignore[arg-type]
        assert reply.status_code == 400
        assert detail(reply).startswith("cache_salt:")
