"""Builds and starts the HTTP frontend of `lmcache server` from the container (issue 6, routes).

The frontend adapter never imports the app layer, so this module collects what its routes need into one
`HttpServices`: the domain services, the L2 cascade and its types, the storage loop's `submit`, a redacted
configuration dump, the metrics registry when metrics are on, the runtime's engine-health callable, and
the domain's event fan-out (L2 deletes made through the routes reach the coordinator's reporter there).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING

from lmcache import __version__
from lmcache.adapters.http.app import build_http_app
from lmcache.adapters.http.config_view import redact_secrets
from lmcache.adapters.http.gate import HttpGate
from lmcache.adapters.http.server import HttpServer, HttpStartError
from lmcache.adapters.http.services import HttpServices, HttpSettings, MetricsSource
from lmcache.app.config.errors import ConfigError
from lmcache.app.l2_factory import spec_type
from lmcache.app.plain_settings import plain_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from lmcache.app.container import ServerContainer

__all__ = ("build_http_services", "start_http_frontend")

logger = logging.getLogger("lmcache.http")


def _metrics(container: ServerContainer) -> MetricsSource | None:
    """The metrics registry when the container has one and metrics are on, else None (`/metrics` 503)."""
    if not hasattr(container, "metrics"):
        return None
    metrics = container.metrics()
    if not getattr(metrics, "enabled", True) or not callable(getattr(metrics, "render", None)):
        return None
    return metrics


def build_http_services(container: ServerContainer, engine_problem: Callable[[], str | None]) -> HttpServices:
    """Collect the running services for the routes."""
    cfg = container.config()
    settings = plain_settings(HttpSettings, cfg.mp, cfg.l1, cfg.http)
    return HttpServices(
        settings=settings,
        engine=container.engine(),
        quotas=container.quotas(),
        supervisor=container.supervisor(),
        eviction=container.eviction_loop(),
        hasher=container.hasher(),
        l2_adapters=container.l2_adapters(),
        l2_types=[spec_type(spec) for spec in cfg.l2.l2_adapter],
        run_storage=container.storage_loop().submit,
        engine_problem=engine_problem,
        config=redact_secrets(cfg.model_dump(mode="json")),
        version=__version__,
        metrics=_metrics(container),
        started_at=time.time(),
        events=container.events(),
        l1_memory=container.l1_memory(),
        status_extras=_status_extras(container),
    )


def _status_extras(container: ServerContainer) -> Callable[[], Mapping[str, Any]] | None:
    """More `/status` fields: CacheBlend's on a blend server, `runtime_plugins` and `trace` (issue 23)."""
    blend = container.blend() if hasattr(container, "blend") else None
    plugins = container.plugins() if hasattr(container, "plugins") else None
    trace = container.trace_recorder() if hasattr(container, "trace_recorder") else None

    def status() -> Mapping[str, Any]:
        extra: dict[str, Any] = dict(blend.status()) if blend is not None else {}
        extra["runtime_plugins"] = plugins.status() if plugins is not None else []
        extra["trace"] = trace.status() if trace is not None else None
        return extra

    return status


def _loopback_only(host: str) -> bool:
    """Whether `host` names only loopback addresses (unresolvable names count as not loopback)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def start_http_frontend(container: ServerContainer, engine_problem: Callable[[], str | None]) -> HttpServer:
    """Start uvicorn on `--http-host/--http-port`; a ConfigError naming the flags when it cannot bind."""
    cfg = container.config().http
    app = HttpGate(build_http_app(build_http_services(container, engine_problem)), cfg.http_auth_token)
    server = HttpServer(app, cfg.http_host, cfg.http_port, cfg.http_ssl_certfile, cfg.http_ssl_keyfile)
    if not cfg.http_auth_token and not _loopback_only(cfg.http_host):
        logger.warning(
            "The HTTP frontend on %s:%d accepts requests from the network without authentication: anyone "
            "who reaches it can clear the cache, delete L2 objects, change quotas and read block "
            "checksums. Set --http-auth-token (or LMCACHE_HTTP_AUTH_TOKEN), or bind --http-host 127.0.0.1.",
            cfg.http_host,
            cfg.http_port,
        )
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(
            f"--http-host/--http-port: cannot bind {cfg.http_host}:{cfg.http_port} ({exc.strerror or exc})"
        ) from None
    except HttpStartError as exc:
        raise ConfigError(f"--http-host/--http-port: {exc}") from None
    return server
