"""Starting the HTTP frontend of `lmcache server`, and the two views of running parts its routes read.

The frontend adapter never imports the app layer, and the container (`container.py`) builds its
`HttpServices` and `HttpServer`. What stays here is what the container's providers call and the runtime's
start step: `metrics_source` (the registry for `/metrics`, or None while metrics are off), `status_extras`
(CacheBlend's fields, `runtime_plugins` and `trace` for `/status`) and `start_http_frontend`, which warns
about an unauthenticated frontend open to the network and turns a failed bind into a `ConfigError`
naming the flags.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

from lmcache.adapters.http.server import HttpStartError
from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from lmcache.adapters.http.server import HttpServer
    from lmcache.adapters.http.services import MetricsSource
    from lmcache.adapters.plugins.supervisor import PluginSupervisor
    from lmcache.adapters.trace.recorder import LctTraceRecorder
    from lmcache.app.blend_wiring import BlendServer
    from lmcache.app.config.server import HttpConfig

__all__ = ("metrics_source", "start_http_frontend", "status_extras")

logger = logging.getLogger("lmcache.http")


def metrics_source(metrics: Any) -> MetricsSource | None:
    """The metrics registry when metrics are on, else None (`/metrics` answers 503)."""
    if not getattr(metrics, "enabled", True) or not callable(getattr(metrics, "render", None)):
        return None
    source: MetricsSource = metrics
    return source


def status_extras(
    blend: BlendServer | None, plugins: PluginSupervisor | None, trace: LctTraceRecorder | None
) -> Callable[[], Mapping[str, Any]]:
    """More `/status` fields: CacheBlend's on a blend server, `runtime_plugins` and `trace` (issue 23)."""

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


def start_http_frontend(server: HttpServer, cfg: HttpConfig) -> HttpServer:
    """Start uvicorn on `--http-host/--http-port`; a ConfigError naming the flags when it cannot bind."""
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
