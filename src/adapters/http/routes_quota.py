"""Per-cache_salt L1 quotas (wire-protocol.md §7.2, `lmcache quota ...`); IsolatedLRU enforces them.

The empty salt is spelled `_default` in paths and answers; GB are binary (bytes / 2^30), unrounded. A limit
larger than the whole L1 is accepted (L1 may grow on a restart) but answered with a `warning` and logged:
it can never bind, which is rarely what the operator meant.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Request, delete, get, put
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from lmcache.adapters.http.errors import bad_request
from lmcache.adapters.http.schemas import MAX_QUOTA_GB
from lmcache.adapters.http.storage_calls import parse_salt
from lmcache.domain.keys import salt_alias
from lmcache.domain.units import GIB, bytes_to_gb, gb_to_bytes

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromPath

    from lmcache.adapters.http.services import HttpServices

__all__ = ("QUOTA_ROUTES", "quota_warning")

logger = logging.getLogger(__name__)


def _gb(limit: int | None) -> float | None:
    return None if limit is None else bytes_to_gb(limit)


async def _limit_gb(request: Request[Any, Any, Any]) -> float:
    """`limit_gb` of the body, parsed by hand.

    So overflowing numbers (1e999) and the `Infinity` / `NaN` that Python clients send are refused naming
    the field, rather than as malformed JSON.
    """
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body", "not valid JSON") from None
    if not isinstance(body, dict) or "limit_gb" not in body:
        raise bad_request("limit_gb", 'required: send {"limit_gb": <GB>}')
    unknown = sorted(str(k) for k in body if k != "limit_gb")
    if unknown:
        raise bad_request(unknown[0], "unknown field")
    value = body["limit_gb"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request("limit_gb", f"must be a number, got {value!r}")
    try:
        limit = float(value)
    except OverflowError:  # an int too large for a float
        limit = math.inf
    if not math.isfinite(limit) or not 0 <= limit <= MAX_QUOTA_GB:
        raise bad_request("limit_gb", f"must be a number in 0..{MAX_QUOTA_GB:.0f} (GiB), got {value!r}")
    return limit


@dataclass
class _QuotaOperation(Operation):
    """Documents the body `set_quota` parses itself (its checks name `limit_gb` even for NaN or 1e999)."""

    def __post_init__(self) -> None:
        limit = Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=MAX_QUOTA_GB)
        body = Schema(
            type=OpenAPIType.OBJECT,
            properties={"limit_gb": limit},
            required=["limit_gb"],
            additional_properties=False,
        )
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=body)}, required=True
        )


@put("/quota/{cache_salt:str}", operation_class=_QuotaOperation)
async def set_quota(
    cache_salt: FromPath[str], request: Request[Any, Any, Any], services: NamedDependency[HttpServices]
) -> dict[str, Any]:
    """Set (or replace) a salt's L1 limit in GB."""
    salt = parse_salt(cache_salt)
    limit_gb = await _limit_gb(request)
    services.quotas.set(salt, gb_to_bytes(limit_gb))
    reply: dict[str, Any] = {"cache_salt": salt_alias(salt), "limit_gb": limit_gb, "status": "ok"}
    warning = quota_warning(salt_alias(salt), gb_to_bytes(limit_gb), services.engine.l1.arena.total_bytes)
    if warning is not None:
        logger.warning("%s", warning)
        reply["warning"] = warning
    return reply


def quota_warning(salt: str, limit_bytes: int, l1_bytes: int) -> str | None:
    """Why a quota cannot bind (it exceeds the whole L1), or None when it can."""
    if limit_bytes <= l1_bytes:
        return None
    return (
        f"the quota of cache_salt {salt!r} ({limit_bytes / GIB:.3f} GiB) is larger than L1 "
        f"({l1_bytes / GIB:.3f} GiB): it never limits this salt; L1 fills up first"
    )


@get("/quota/{cache_salt:str}", sync_to_thread=True)
def get_quota(cache_salt: FromPath[str], services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """A salt's limit (null without a quota) and its current L1 usage."""
    salt = parse_salt(cache_salt)
    limit = services.quotas.get(salt)
    usage = services.engine.l1.usage_by_salt().get(salt, 0)
    return {
        "cache_salt": salt_alias(salt),
        "limit_gb": _gb(limit),
        "current_usage_gb": bytes_to_gb(usage),
        "exists": limit is not None,
    }


@delete("/quota/{cache_salt:str}", status_code=200)
async def delete_quota(cache_salt: FromPath[str], services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """Remove a salt's quota."""
    salt = parse_salt(cache_salt)
    removed = services.quotas.delete(salt)
    return {"cache_salt": salt_alias(salt), "status": "removed" if removed else "not_found"}


@get("/quota", sync_to_thread=True)
def list_quotas(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """Every salt with a quota or L1 usage: `{"users": {salt: {"limit_gb", "current_usage_gb"}}}`."""
    status = services.quotas.status(services.engine.l1.usage_by_salt())
    return {
        "users": {
            salt_alias(salt): {"limit_gb": _gb(s.limit_bytes), "current_usage_gb": bytes_to_gb(s.usage_bytes)}
            for salt, s in status.items()
        }
    }


QUOTA_ROUTES = (set_quota, get_quota, delete_quota, list_quotas)
