"""Cache administration: clearing L1, block checksums, and paging through / deleting resident objects.

Handlers that take storage locks or hash KV blocks are sync and run in a worker thread
(`sync_to_thread=True`); L2 work goes to the storage loop. Neither blocks uvicorn's event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
from litestar import Request, delete, get, post

from lmcache.adapters.http.checksums_view import default_chunk_blocks, worker_checksums
from lmcache.adapters.http.errors import bad_request, http_error
from lmcache.adapters.http.l2_ops import can_list_keys
from lmcache.adapters.http.schemas import MAX_BLOCK_IDS, ClearBody, EncodedKey, decode_keys
from lmcache.adapters.http.storage_calls import (
    check_page_size,
    delete_from_l2,
    l2_page,
    parse_salt,
    pick_adapter,
)

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromQuery, JSONBody

    from lmcache.adapters.http.schemas import ChecksumBody, DeleteObjectsBody
    from lmcache.adapters.http.services import HttpServices
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_index import ClearReport

__all__ = ("CACHE_ROUTES", "parse_block_ids")

TIERS = ("l1", "l2")
MAX_CURSOR = 1 << 62  # listing cursors count index entries; beyond this a token is surely not ours


def _tier(value: str, allowed: tuple[str, ...] = TIERS, source: str = "body") -> str:
    if value not in allowed:
        raise bad_request("tier", f"unknown tier {value!r}; expected one of {', '.join(allowed)}", source)
    return value


def _clear_answer(report: ClearReport) -> dict[str, Any]:
    """The counts of a clear: what went, and what stayed and why (so "0 removed" never hides locks)."""
    return {
        "removed_objects": report.removed,
        "locked_objects": report.locked,
        "writing_objects": report.writing,
        "retired_objects": report.retired,
        "retired_bytes": report.retired_bytes,
    }


@post("/clear-cache", status_code=200)
async def clear_cache(
    request: Request[Any, Any, Any], services: NamedDependency[HttpServices]
) -> dict[str, Any]:
    """Force-clear L1: every object, read-locked ones included (their memory goes after their readers).

    It takes no body: anything but nothing, `{}` or `null` is a 400 (a body here is a client's mistake).
    """
    body = await request.body()
    if body.strip() not in (b"", b"{}", b"null"):
        raise bad_request(
            "body", f"/clear-cache takes no body (got {len(body)} bytes); see POST /cache/clear"
        )
    report = await anyio.to_thread.run_sync(services.engine.clear_report, True)
    return {"status": "ok", **_clear_answer(report)}


@post("/cache/clear", status_code=200, sync_to_thread=True)
def cache_clear(
    services: NamedDependency[HttpServices], data: JSONBody[ClearBody | None] = None
) -> dict[str, Any]:
    """Clear one tier (only `l1`); `force` also drops read-locked objects."""
    body = data if data is not None else ClearBody()
    _tier(body.tier, ("l1",))
    report = services.engine.clear_report(body.force)
    return {"status": "ok", "cleared": {"tier": body.tier}, "force": body.force, **_clear_answer(report)}


@post("/cache/checksums", status_code=200, sync_to_thread=True)
def cache_checksums(data: JSONBody[ChecksumBody], services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """Per-chunk MD5s of a registered worker's blocks (wire-protocol.md §7.1)."""
    return worker_checksums(services, data.instance_id, data.block_ids, data.chunk_size, data.layerwise)


def parse_block_ids(text: str) -> list[int]:
    """`"8-11,20,22"` -> `[8, 9, 10, 11, 20, 22]`; a 400 naming `block_ids` when it does not parse."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, sep, last = part.partition("-")
            lo = int(first)
            hi = int(last) if sep else lo
            if hi < lo or len(out) + hi - lo >= MAX_BLOCK_IDS:
                raise ValueError(part)
            out.extend(range(lo, hi + 1))
    except ValueError:
        message = f"expected comma-separated ids or first-last ranges (< {MAX_BLOCK_IDS} ids), got {text!r}"
        raise bad_request("block_ids", message, "query") from None
    return out


@get("/kvcache/check", sync_to_thread=True)
def kvcache_check(
    services: NamedDependency[HttpServices],
    instance_id: FromQuery[int],
    block_ids: FromQuery[str],
    chunk_size: FromQuery[int | None] = None,
    layerwise: FromQuery[bool] = False,
) -> dict[str, Any]:
    """The checksum query as a GET: `?instance_id=1000&block_ids=8-39[&chunk_size=16][&layerwise=true]`.

    `chunk_size` (blocks per chunk) defaults to the registration's own.
    """
    ids = parse_block_ids(block_ids)
    blocks = chunk_size if chunk_size is not None else default_chunk_blocks(services, instance_id)
    return worker_checksums(services, instance_id, ids, blocks, layerwise)


def _filter(model_name: str | None, cache_salt: str | None) -> tuple[str | None, str | None]:
    salt = parse_salt(cache_salt, source="query") if cache_salt is not None else None
    return model_name, salt


@get("/cache/objects")
async def list_objects(
    services: NamedDependency[HttpServices],
    tier: FromQuery[str] = "l1",
    page_size: FromQuery[int] = 1000,
    page_token: FromQuery[str | None] = None,
    model_name: FromQuery[str | None] = None,
    cache_salt: FromQuery[str | None] = None,
    adapter: FromQuery[int] = 0,
) -> dict[str, Any]:
    """One page of resident objects of a tier; pass `next_page_token` back as `page_token` for the next."""
    _tier(tier, source="query")
    check_page_size(page_size)
    model, salt = _filter(model_name, cache_salt)
    if tier == "l1":
        return await _l1_page(services, page_size, page_token, model, salt)
    chosen = pick_adapter(services, adapter, source="query")
    if not can_list_keys(chosen):
        raise http_error(501, f"L2 adapter #{adapter} cannot list its keys")

    def keep(key: ObjectKey) -> bool:
        return (model is None or key.model_name == model) and (salt is None or key.cache_salt == salt)

    listing = await l2_page(services, chosen, page_token, page_size, keep)
    objects = [{"key": EncodedKey.from_key(k), "bytes": listing.mean_bytes} for k in listing.keys]
    return {"tier": "l2", "adapter": adapter, "objects": objects, "next_page_token": listing.next_token}


async def _l1_page(
    services: HttpServices,
    page_size: int,
    token: str | None,
    model: str | None,
    salt: str | None,
) -> dict[str, Any]:
    try:
        cursor = int(token) if token else 0
        if not 0 <= cursor <= MAX_CURSOR:
            raise ValueError
    except ValueError:
        raise bad_request("page_token", f"not a token this server handed out: {token!r}", "query") from None
    page, nxt = await anyio.to_thread.run_sync(
        services.engine.l1.objects_page, cursor, page_size, model, salt
    )
    objects = [
        {
            "key": EncodedKey.from_key(info.key),
            "bytes": info.size,
            "state": "ready" if info.ready else "writing",
            "readers": info.readers,
        }
        for info in page
    ]
    return {"tier": "l1", "objects": objects, "next_page_token": None if nxt is None else str(nxt)}


@delete("/cache/objects", status_code=200)
async def delete_objects(
    data: JSONBody[DeleteObjectsBody], services: NamedDependency[HttpServices]
) -> dict[str, Any]:
    """Delete listed objects from a tier: unlocked ones (L1 `force`: any); reports what it did."""
    _tier(data.tier)
    keys = list(dict.fromkeys(decode_keys(data.keys)))
    if data.tier == "l1":
        deleted = await anyio.to_thread.run_sync(services.engine.l1.delete, keys, data.force)
        return {"tier": "l1", "requested": len(keys), "deleted": deleted, "skipped": len(keys) - deleted}
    report = await delete_from_l2(services, data.adapter, keys)
    return {
        "tier": "l2",
        "adapter": data.adapter,
        "requested": len(keys),
        "deleted": report.deleted,
        "missing": report.missing,
        "locked": report.locked,
    }


CACHE_ROUTES = (
    clear_cache,
    cache_clear,
    cache_checksums,
    kvcache_check,
    list_objects,
    delete_objects,
)
