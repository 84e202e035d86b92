"""Informational routes: banner, health, status, configuration, version, metrics and threads.

`/healthcheck` runs on uvicorn's event loop without touching storage locks beyond the supervisor's, so it
answers while the data path is saturated.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Response, get

from lmcache.adapters.http.errors import http_error
from lmcache.adapters.http.status import ENGINE_TYPE, build_status, health_problem, loops_view

if TYPE_CHECKING:
    from litestar.di import NamedDependency

    from lmcache.adapters.http.services import HttpServices

__all__ = ("INFO_ROUTES",)


@get("/")
async def banner(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """What this service is and where to look next."""
    return {
        "service": "lmcache server",
        "engine_type": ENGINE_TYPE,
        "version": services.version,
        "instance_id": services.settings.instance_id,
        "started_at": services.started_at,
        "endpoints": ["/healthcheck", "/status", "/metrics", "/config", "/version", "/threads", "/quota"],
    }


@get("/healthcheck")
async def healthcheck(services: NamedDependency[HttpServices]) -> Response[dict[str, Any]]:
    """200 `{"status":"healthy"}`, or 503 with the reason (engine not up, a background loop down)."""
    problem = health_problem(services)
    if problem is None:
        return Response({"status": "healthy"}, media_type=MediaType.JSON)
    return Response({"status": "unhealthy", "reason": problem}, status_code=503, media_type=MediaType.JSON)


@get("/status")
async def status(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """The server's internal state (wire-protocol.md §7.2)."""
    return await build_status(services)


@get("/config")
async def config(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """The effective configuration (secrets redacted)."""
    return dict(services.config)


@get("/version")
async def version(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """The package version."""
    return {"version": services.version, "engine_type": ENGINE_TYPE}


@get("/metrics")
async def metrics(services: NamedDependency[HttpServices]) -> Response[bytes]:
    """Prometheus exposition of the server's registry; 503 when metrics are off."""
    if services.metrics is None:
        raise http_error(503, "metrics disabled: this server runs without a metrics registry")
    body, content_type = services.metrics.render()
    return Response(body, media_type=content_type)


@get("/threads")
async def threads(services: NamedDependency[HttpServices]) -> dict[str, Any]:
    """Supervised background loops (alive = up) and every thread of the process."""
    return {
        "loops": loops_view(services),
        "threads": sorted(
            ({"name": t.name, "alive": t.is_alive(), "daemon": t.daemon} for t in threading.enumerate()),
            key=lambda t: str(t["name"]),
        ),
    }


INFO_ROUTES = (banner, healthcheck, status, config, version, metrics, threads)
