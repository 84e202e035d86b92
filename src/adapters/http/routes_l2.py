"""L2 routes the coordinator calls (adapters/coordinator/servers.py fixes their shapes).

- `DELETE /l2` `{"keys": [EncodedObjectKey, ...]}` (at most 10,000) on the first adapter: missing and
  pinned keys are skipped and counted -> `{"deleted", "missing", "locked", "requested"}`; the deleted
  ones are published as an `L2Deleted` event (reported to the coordinator as `delete` events).
- `GET /l2/keys?page_size=&page_token=&model_name=&cache_salt=` -> `{"keys": [{"key", "bytes"}],
  "next_page_token"}`; 501 when the adapter cannot list, 404 without an L2 tier.
- `POST /l2/prefetch` / `GET /l2/prefetch/{request_id}`: see l2_prefetch.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import delete, get, post

from lmcache.adapters.http.errors import http_error
from lmcache.adapters.http.l2_ops import can_list_keys
from lmcache.adapters.http.schemas import EncodedKey, decode_keys
from lmcache.adapters.http.storage_calls import (
    check_page_size,
    delete_from_l2,
    l2_page,
    parse_salt,
    pick_adapter,
)

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromPath, FromQuery, JSONBody

    from lmcache.adapters.http.l2_prefetch import PrefetchBook
    from lmcache.adapters.http.schemas import KeysBody, PrefetchBody
    from lmcache.adapters.http.services import HttpServices
    from lmcache.domain.keys import ObjectKey

__all__ = ("L2_ROUTES",)


@delete("/l2", status_code=200)
async def delete_l2(data: JSONBody[KeysBody], services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """Delete keys from the first L2 adapter, skipping missing and pinned ones."""
    keys = list(dict.fromkeys(decode_keys(data.keys)))
    report = await delete_from_l2(services, 0, keys)
    return {
        "requested": len(keys),
        "deleted": report.deleted,
        "missing": report.missing,
        "locked": report.locked,
    }


@get("/l2/keys")
async def l2_keys(
    services: NamedDependency[HttpServices],
    page_size: FromQuery[int] = 1000,
    page_token: FromQuery[str | None] = None,
    model_name: FromQuery[str | None] = None,
    cache_salt: FromQuery[str | None] = None,
) -> dict[str, Any]:
    """One page of the first adapter's keys with their (mean) sizes."""
    check_page_size(page_size)
    salt = parse_salt(cache_salt, source="query") if cache_salt is not None else None
    adapter = pick_adapter(services, 0)
    if not can_list_keys(adapter):
        raise http_error(501, "the L2 adapter cannot list its keys")

    def keep(key: ObjectKey) -> bool:
        return (model_name is None or key.model_name == model_name) and (
            salt is None or key.cache_salt == salt
        )

    listing = await l2_page(services, adapter, page_token, page_size, keep)
    return {
        "keys": [{"key": EncodedKey.from_key(k), "bytes": listing.mean_bytes} for k in listing.keys],
        "next_page_token": listing.next_token,
    }


@post("/l2/prefetch", status_code=202)
async def l2_prefetch(
    data: JSONBody[PrefetchBody],
    services: NamedDependency[HttpServices],
    prefetches: NamedDependency[PrefetchBook],
) -> dict[str, Any]:
    """Start loading a token prefix from L2 into L1 for every rank; poll its request id."""
    return await prefetches.submit(services, data)


@get("/l2/prefetch/{request_id:str}")
async def l2_prefetch_status(
    request_id: FromPath[str], prefetches: NamedDependency[PrefetchBook]
) -> dict[str, Any]:
    """`{"status": "pending"}` or `{"status": "completed", "found_keys", "total_keys"}`."""
    return prefetches.get(request_id)


L2_ROUTES = (delete_l2, l2_keys, l2_prefetch, l2_prefetch_status)
