"""L2 routes (coordinator-api.md §2): quotas, usage events, status, and the prefetch fan-out."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from litestar import delete, get, post, put
from litestar.exceptions import HTTPException, NotFoundException

from lmcache.adapters.coordinator.schemas import bad_request
from lmcache.adapters.coordinator.servers import ServerCallError
from lmcache.domain.fleet_events import L2Event, L2EventType
from lmcache.domain.keys import InvalidKeyError, salt_alias, salt_from_alias, validate_cache_salt
from lmcache.domain.units import bytes_to_gb

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromPath, JSONBody

    from lmcache.adapters.coordinator.schemas import EventsBody, PrefetchBody, QuotaBody
    from lmcache.adapters.coordinator.service import CoordinatorService

__all__ = ("L2_ROUTES", "path_salt", "quota_delete", "quota_put", "salt_status")

logger = logging.getLogger(__name__)

MAX_PREFETCH_RECORDS = 10_000


def path_salt(name: str) -> str:
    """The key spelling of a salt from a URL path (`_default` -> ""); a bad salt is a 400."""
    try:
        return validate_cache_salt(salt_from_alias(name))
    except InvalidKeyError as exc:
        raise bad_request("cache_salt", str(exc)) from None


def quota_put(runtime: CoordinatorService, salt_name: str, limit_gb: float) -> dict[str, Any]:
    """Set a quota; shared by `/l2/quota/{salt}` and `/quota/{salt}`."""
    salt = path_salt(salt_name)
    try:
        runtime.state.quotas.set(salt, limit_gb)
    except ValueError as exc:
        raise bad_request("limit_gb", str(exc)) from None
    logger.info("Quota of cache_salt %r set to %s GiB", salt_alias(salt), limit_gb)
    return {"cache_salt": salt_alias(salt), "limit_gb": limit_gb, "status": "ok"}


def quota_delete(runtime: CoordinatorService, salt_name: str) -> dict[str, Any]:
    """Remove a quota; shared by `/l2/quota/{salt}` and `/quota/{salt}`."""
    salt = path_salt(salt_name)
    removed = runtime.state.quotas.delete(salt)
    return {"cache_salt": salt_alias(salt), "status": "removed" if removed else "not_found"}


def salt_status(runtime: CoordinatorService, salt: str) -> dict[str, Any]:
    """Quota and usage of one salt (key spelling)."""
    limit = runtime.state.quotas.get_gb(salt)
    return {
        "cache_salt": salt_alias(salt),
        "quota_limit_gb": limit,
        "quota_exists": limit is not None,
        "usage_gb": bytes_to_gb(runtime.state.directory.usage(salt)),
    }


@put("/l2/quota/{salt:str}")
async def put_quota(
    salt: FromPath[str], data: JSONBody[QuotaBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Set a salt's fleet L2 quota in GB."""
    return quota_put(runtime, salt, data.limit_gb)


@get("/l2/quota/{salt:str}")
async def get_quota(salt: FromPath[str], runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """A salt's quota (`limit_gb` null when none)."""
    key = path_salt(salt)
    limit = runtime.state.quotas.get_gb(key)
    return {"cache_salt": salt_alias(key), "limit_gb": limit, "exists": limit is not None}


@delete("/l2/quota/{salt:str}", status_code=200)
async def delete_quota(salt: FromPath[str], runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """Remove a salt's quota."""
    return quota_delete(runtime, salt)


@post("/l2/events", status_code=200)
async def post_events(
    data: JSONBody[EventsBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, int]:
    """Apply one ordered batch of a server's L2 events unless it was applied before."""
    events = [
        L2Event(L2EventType(e.type), e.key.to_key_at(f"events[{i}].key"), e.bytes)
        for i, e in enumerate(data.events)
    ]
    result = runtime.state.apply_batch(data.instance_id, data.seq, events)
    if result.duplicate:
        runtime.metrics.batches_duplicate.inc()
        return {"recorded": 0, "duplicates": len(events)}
    runtime.metrics.events_applied.inc(result.recorded)
    return {"recorded": result.recorded, "duplicates": 0}


@get("/l2/status/{salt:str}")
async def get_salt_status(
    salt: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Quota and usage of one salt."""
    return salt_status(runtime, path_salt(salt))


@get("/l2/status")
async def get_status(runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """Total usage and every salt with a quota or usage."""
    salts = set(runtime.state.quotas.all_gb()) | set(runtime.state.directory.usage_by_salt())
    return {
        "total_gb": bytes_to_gb(runtime.state.directory.total_bytes),
        "by_cache_salt": [salt_status(runtime, s) for s in sorted(salts)],
    }


@post("/l2/prefetch", status_code=200)
async def post_prefetch(
    data: JSONBody[PrefetchBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Forward a prefetch of `token_ids` to the named server (`noop` when shorter than one chunk)."""
    record = runtime.state.registry.get(data.instance_id)
    if record is None or runtime.state.registry.is_expired(record):
        raise NotFoundException(detail=f"instance {data.instance_id!r} is not registered")
    chunks = len(data.token_ids) // runtime.settings.blend_chunk_size
    request_id = uuid.uuid4().hex
    answer = {"instance_id": data.instance_id, "request_id": request_id, "chunks": chunks}
    if chunks == 0:
        return {**answer, "status": "noop"}
    body = {
        "request_id": request_id,
        "model_name": data.model_name,
        "world_size": data.world_size,
        "token_ids": data.token_ids,
        "cache_salt": data.cache_salt,
    }
    try:
        await runtime.servers.submit_prefetch(record.http_url, body)
    except ServerCallError as exc:
        raise HTTPException(
            status_code=502, detail=f"prefetch on {data.instance_id!r} failed: {exc}"
        ) from None
    runtime.prefetches[(data.instance_id, request_id)] = {"status": "pending"}
    while len(runtime.prefetches) > MAX_PREFETCH_RECORDS:  # forget the oldest requests
        del runtime.prefetches[next(iter(runtime.prefetches))]
    return {**answer, "status": "submitted"}


@get("/l2/prefetch/{instance_id:str}/{request_id:str}")
async def get_prefetch(
    instance_id: FromPath[str], request_id: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Status of a forwarded prefetch: pending, or completed with found/total keys."""
    known = runtime.prefetches.get((instance_id, request_id))
    if known is None:
        raise NotFoundException(detail=f"no prefetch {request_id!r} on instance {instance_id!r}")
    if known["status"] == "completed":
        return known
    record = runtime.state.registry.get(instance_id)
    if record is None:
        raise NotFoundException(detail=f"instance {instance_id!r} is not registered")
    try:
        answer = await runtime.servers.prefetch_status(record.http_url, request_id)
    except ServerCallError as exc:
        raise HTTPException(status_code=502, detail=f"prefetch status on {instance_id!r}: {exc}") from None
    if answer.get("status") != "completed":
        return {"status": "pending"}
    done = {
        "status": "completed",
        "found_keys": int(answer.get("found_keys", 0)),
        "total_keys": int(answer.get("total_keys", 0)),
    }
    runtime.prefetches[(instance_id, request_id)] = done
    return done


L2_ROUTES = (
    put_quota,
    get_quota,
    delete_quota,
    post_events,
    get_salt_status,
    get_status,
    post_prefetch,
    get_prefetch,
)
