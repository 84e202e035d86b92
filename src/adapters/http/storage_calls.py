"""Await storage-loop work from uvicorn's loop, and the small argument checks shared by the routes.

L2 deletes go through `delete_from_l2`, which publishes an `L2Deleted` event for the objects actually
removed, on the storage loop right after the adapter answered (so the event is not lost when the HTTP
side gives up with a 504): the coordinator's event reporter turns it into `delete` events.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from lmcache.adapters.http.errors import bad_request, http_error
from lmcache.adapters.http.l2_ops import (
    BadPageToken,
    DeleteReport,
    KeyListing,
    delete_unlocked,
    list_keys_page,
)
from lmcache.adapters.http.schemas import MAX_KEYS
from lmcache.domain.events import L2Deleted
from lmcache.domain.keys import InvalidKeyError, salt_from_alias, validate_cache_salt

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from lmcache.adapters.http.services import HttpServices
    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = (
    "STORAGE_TIMEOUT_S",
    "check_page_size",
    "delete_from_l2",
    "l2_page",
    "on_storage",
    "parse_salt",
    "pick_adapter",
)

T = TypeVar("T")
STORAGE_TIMEOUT_S = 30.0


async def on_storage(
    services: HttpServices, coro: Coroutine[Any, Any, T], timeout_s: float = STORAGE_TIMEOUT_S
) -> T:
    """Run `coro` on the storage loop and await it here; a 504 when it takes longer than `timeout_s`."""
    future = services.run_storage(coro)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except TimeoutError:
        future.cancel()
        raise http_error(504, f"the L2 tier did not answer within {timeout_s:g} s") from None


def pick_adapter(
    services: HttpServices, index: int, field: str = "adapter", source: str = "body"
) -> L2Adapter:
    """The L2 adapter at `index`; 404 without any adapter, 400 for an index out of range."""
    adapters = services.l2_adapters
    if not adapters:
        raise http_error(404, "no L2 adapter is configured (--l2-adapter)")
    if not 0 <= index < len(adapters):
        raise bad_request(field, f"no L2 adapter #{index}; {len(adapters)} configured (0-based)", source)
    return adapters[index]


def check_page_size(page_size: int, field: str = "page_size") -> int:
    """1..MAX_KEYS, else a 400 naming the field."""
    if not 1 <= page_size <= MAX_KEYS:
        raise bad_request(field, f"must be in 1..{MAX_KEYS}, got {page_size}", "query")
    return page_size


def parse_salt(name: str, field: str = "cache_salt", source: str = "path") -> str:
    """The key spelling of a salt (`_default` -> ""); an invalid salt is a 400 naming the field."""
    try:
        return validate_cache_salt(salt_from_alias(name))
    except InvalidKeyError as exc:
        raise bad_request(field, str(exc), source) from None


async def l2_page(
    services: HttpServices,
    adapter: L2Adapter,
    token: str | None,
    page_size: int,
    keep: Callable[[ObjectKey], bool],
) -> KeyListing:
    """One filtered page of an adapter's keys; a token this server did not hand out is a 400."""
    try:
        return await on_storage(services, list_keys_page(adapter, token or None, page_size, keep))
    except BadPageToken:
        raise bad_request("page_token", f"not a token this server handed out: {token!r}", "query") from None


async def delete_from_l2(services: HttpServices, index: int, keys: Sequence[ObjectKey]) -> DeleteReport:
    """Delete the unpinned `keys` from adapter `index` (404/400 as `pick_adapter`) and publish what went.

    The L2 port has no per-key size, so the event carries none (the coordinator subtracts the size it
    recorded when the object was stored).
    """
    adapter = pick_adapter(services, index)
    events = services.events

    async def delete_and_publish() -> DeleteReport:
        report = await delete_unlocked(adapter, keys)
        if report.removed:
            events.publish(L2Deleted(index, report.removed))
        return report

    return await on_storage(services, delete_and_publish())
