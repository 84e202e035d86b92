"""Membership routes (coordinator-api.md §1): register, heartbeat, deregister, list, health, metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import Response, delete, get, post, put
from litestar.exceptions import NotFoundException

from lmcache.adapters.coordinator.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromPath, JSONBody

    from lmcache.adapters.coordinator.schemas import RegisterBody
    from lmcache.adapters.coordinator.service import CoordinatorService

__all__ = ("MEMBERSHIP_ROUTES",)

logger = logging.getLogger(__name__)


@post("/instances", status_code=200)
async def register_instance(
    data: JSONBody[RegisterBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Register (or re-register) a server; an empty instance_id gets a fresh one."""
    instance_id, re_registered = runtime.state.register(
        data.instance_id,
        data.ip,
        data.http_port,
        metadata=data.metadata,
        p2p_advertised_url=data.p2p_advertised_url,
        mq_port=data.mq_port,
    )
    runtime.metrics.registrations.inc()
    logger.info(
        "Instance %s %sregistered at %s:%d",
        instance_id,
        "re-" if re_registered else "",
        data.ip,
        data.http_port,
    )
    return {"instance_id": instance_id, "re_registered": re_registered}


@put("/instances/{instance_id:str}/heartbeat", status_code=200)
async def heartbeat(
    instance_id: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> dict[str, str]:
    """Refresh an instance; 404 tells the server to register again."""
    if not runtime.state.registry.heartbeat(instance_id):
        raise NotFoundException(detail=f"instance {instance_id!r} is not registered")
    runtime.metrics.heartbeats.inc()
    return {"status": "ok"}


@delete("/instances/{instance_id:str}", status_code=204)
async def deregister_instance(
    instance_id: FromPath[str], runtime: NamedDependency[CoordinatorService]
) -> None:
    """Remove an instance (idempotent)."""
    if runtime.state.registry.deregister(instance_id):
        logger.info("Instance %s deregistered", instance_id)


@get("/instances")
async def list_instances(runtime: NamedDependency[CoordinatorService]) -> dict[str, Any]:
    """Every registered instance."""
    return {"instances": [r.to_json() for r in runtime.state.registry.all()]}


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "healthy"}


@get("/metrics")
async def metrics(runtime: NamedDependency[CoordinatorService]) -> Response[bytes]:
    """Prometheus text exposition."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)


MEMBERSHIP_ROUTES = (register_instance, heartbeat, deregister_instance, list_instances, healthz, metrics)
