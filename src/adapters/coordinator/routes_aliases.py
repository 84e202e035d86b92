"""Names used by LMCache 0.5.x tools (coordinator-api.md §4), served from the same state.

`/quota...` answers in the shape of the server's quota endpoints (wire-protocol.md §7.2), with
`current_usage_gb` from the fleet directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import delete, get, put
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter

from lmcache.adapters.coordinator.routes_l2 import path_salt, quota_delete, quota_put
from lmcache.adapters.coordinator.schemas import EncodedKey
from lmcache.domain.keys import salt_alias
from lmcache.domain.units import bytes_to_gb

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromPath, JSONBody

    from lmcache.adapters.coordinator.schemas import QuotaBody
    from lmcache.adapters.coordinator.service import CoordinatorService

__all__ = ("ALIAS_ROUTES",)


@get("/quota")
async def list_quotas(runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """Every quota with its usage."""
    usage = runtime.state.directory.usage
    users = {
        salt_alias(s): {"limit_gb": gb, "current_usage_gb": bytes_to_gb(usage(s))}
        for s, gb in sorted(runtime.state.quotas.all_gb().items())
    }
    return {"users": users}


@put("/quota/{salt:str}")
async def put_quota_alias(
    salt: FromPath[str], data: JSONBody[QuotaBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """= `PUT /l2/quota/{salt}`."""
    return quota_put(runtime, salt, data.limit_gb)


@get("/quota/{salt:str}")
async def get_quota_alias(
    salt: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """A salt's quota and usage."""
    key = path_salt(salt)
    limit = runtime.state.quotas.get_gb(key)
    return {
        "cache_salt": salt_alias(key),
        "limit_gb": limit,
        "current_usage_gb": bytes_to_gb(runtime.state.directory.usage(key)),
        "exists": limit is not None,
    }


@delete("/quota/{salt:str}", status_code=200)
async def delete_quota_alias(
    salt: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """= `DELETE /l2/quota/{salt}`."""
    return quota_delete(runtime, salt)


def _usage_row(instance_id: str, nbytes: int, count: int) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "l2_size_bytes": nbytes,
        "l2_count": count,
        "usage_gb": bytes_to_gb(nbytes),
    }


@get("/instances/usage")
async def instances_usage(runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """L2 usage per registered instance, from the objects each one stored."""
    usage = runtime.state.directory.usage_by_instance()
    rows = []
    for record in runtime.state.registry.all():
        u = usage.get(record.instance_id)
        rows.append(_usage_row(record.instance_id, u.nbytes if u else 0, u.count if u else 0))
    return {"instances": rows}


@get("/instances/{instance_id:str}/usage")
async def instance_usage(
    instance_id: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """L2 usage of one instance; 404 when it is neither registered nor the storer of any object."""
    u = runtime.state.directory.usage_by_instance().get(instance_id)
    if u is None and instance_id not in runtime.state.registry:
        raise NotFoundException(detail=f"instance {instance_id!r} is not registered")
    return _usage_row(instance_id, u.nbytes if u else 0, u.count if u else 0)


@get("/directory/stats")
async def directory_stats(runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """Sizes of the key directory and the blend index."""
    directory = runtime.state.directory
    return {
        "num_keys": len(directory),
        "l2_count": len(directory),
        "l2_size_bytes": directory.total_bytes,
        "num_cache_salts": len(directory.usage_by_salt()),
        "num_instances": len(runtime.state.registry),
        "blend_entries": len(runtime.state.blend),
    }


@get("/directory/keys")
async def directory_keys(
    runtime: NamedDependency[CoordinatorService],
    offset: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=0, le=10_000)] = 100,
) -> dict[str, Any]:
    """A page of tracked keys, salt by salt, each salt coldest first."""
    rows = [
        {"key": EncodedKey.from_key(k), "bytes": e.nbytes, "instance_id": e.instance_id}
        for k, e in runtime.state.directory.page(offset, limit)
    ]
    return {"keys": rows, "offset": offset, "limit": limit, "total": len(runtime.state.directory)}


ALIAS_ROUTES = (
    list_quotas,
    put_quota_alias,
    get_quota_alias,
    delete_quota_alias,
    instances_usage,
    instance_usage,
    directory_stats,
    directory_keys,
)
