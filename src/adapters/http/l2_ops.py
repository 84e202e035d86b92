"""L2 work behind the HTTP routes: coroutines that run on the storage event loop, where adapters live.

The L2Adapter port is only called from the storage loop (ports/l2_adapter.py), so the routes submit these
coroutines there (`HttpServices.run_storage`) and await the result from uvicorn's loop.

Capabilities the port does not state are discovered along an adapter's wrapper chain (`inner`): an
adapter whose `can_list_keys` is False cannot list (a 501), and read pins are seen through the
`is_locked(key)` the built-in adapters have (one without it is taken as never pinned). The port has
no per-key size, so a listed key's `bytes` is the adapter's mean object size (exact when one model fills
the tier), measured on the first page and carried in the page token (`<mean>.<adapter cursor>`), so a
listing asks the adapter for its usage once rather than per page.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = (
    "BadPageToken",
    "DeleteReport",
    "KeyListing",
    "can_list_keys",
    "delete_unlocked",
    "list_keys_page",
    "usage_all",
)

USAGE_TIMEOUT_S = 2.0


def _chain(adapter: object) -> Iterator[object]:
    seen: set[int] = set()
    current: object | None = adapter
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "inner", None)


def can_list_keys(adapter: object) -> bool:
    """False when any layer of the adapter says it cannot list (`can_list_keys = False`)."""
    return all(getattr(layer, "can_list_keys", True) is not False for layer in _chain(adapter))


def _lock_probe(adapter: object) -> Callable[[ObjectKey], bool] | None:
    for layer in _chain(adapter):
        probe = getattr(layer, "is_locked", None)
        if callable(probe):
            return probe  # type: ignore[no-any-return]
    return None


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """What a delete did: removed, absent (already gone), skipped because a reader pinned them.

    `removed` lists the keys actually deleted (`deleted` of them), in request order.
    """

    deleted: int
    missing: int
    locked: int
    removed: tuple[ObjectKey, ...] = ()


async def delete_unlocked(adapter: L2Adapter, keys: Sequence[ObjectKey]) -> DeleteReport:
    """Delete the keys no reader has pinned; missing keys are counted, not an error."""
    probe = _lock_probe(adapter)
    pinned = {k for k in keys if probe(k)} if probe is not None else set()
    chosen = [k for k in dict.fromkeys(keys) if k not in pinned]
    results = await adapter.delete(chosen) if chosen else []
    removed = tuple(k for k, ok in zip(chosen, results, strict=False) if ok)
    return DeleteReport(len(removed), len(chosen) - len(removed), len(pinned), removed)


@dataclass(frozen=True, slots=True)
class KeyListing:
    """One page of listed keys, the mean object size, and the next page's token."""

    keys: list[ObjectKey]
    mean_bytes: int
    next_token: str | None


class BadPageToken(ValueError):
    """A page token this server did not hand out."""


def _split_token(token: str) -> tuple[int, str]:
    mean, sep, cursor = token.partition(".")
    if not sep or not mean.isdigit() or not cursor:
        raise BadPageToken(token)
    return int(mean), cursor


async def list_keys_page(
    adapter: L2Adapter,
    token: str | None,
    page_size: int,
    keep: Callable[[ObjectKey], bool] | None = None,
) -> KeyListing:
    """One page of the adapter's listing, filtered by `keep` (a filtered page may come back short).

    Raises:
        BadPageToken: `token` is not one this function returned.
    """
    if token is None:
        page, usage = await asyncio.gather(adapter.list_keys(None, page_size), adapter.usage())
        mean = usage.used_bytes // usage.objects if usage.objects else 0
    else:
        mean, cursor = _split_token(token)
        page = await adapter.list_keys(cursor, page_size)
    keys = [k for k in page.keys if keep is None or keep(k)]
    nxt = None if page.next_cursor is None else f"{mean}.{page.next_cursor}"
    return KeyListing(keys, mean, nxt)


async def usage_all(adapters: Sequence[L2Adapter]) -> list[Any]:
    """Every adapter's usage (None for one that fails or takes longer than USAGE_TIMEOUT_S)."""

    async def one(adapter: L2Adapter) -> Any:
        try:
            return await asyncio.wait_for(adapter.usage(), USAGE_TIMEOUT_S)
        except Exception:
            return None

    return list(await asyncio.gather(*(one(a) for a in adapters)))
