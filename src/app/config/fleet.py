"""The server's side of fleet membership: the `--coordinator-*` flags of `lmcache server`."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import field_validator

from lmcache.app.config.base import Section, flag

__all__ = ("CoordinatorClientConfig",)


class CoordinatorClientConfig(Section):
    """Registration with an `lmcache coordinator`; off unless --coordinator-url is set."""

    coordinator_url: str | None = flag(
        None,
        metavar="URL",
        env="LMCACHE_COORDINATOR_URL",
        default_help="unset (no fleet registration)",
        description="Base URL of an lmcache coordinator to register with, e.g. http://coordinator:9300.",
    )
    coordinator_advertise_ip: str | None = flag(
        None,
        metavar="IP",
        env="LMCACHE_COORDINATOR_ADVERTISE_IP",
        default_help="the outbound IP",
        description="IP address the coordinator uses to reach this server.",
    )
    coordinator_heartbeat_interval: float = flag(
        5.0,
        gt=0,
        metavar="SECONDS",
        env="LMCACHE_COORDINATOR_HEARTBEAT_INTERVAL",
        description="Seconds between heartbeats; keep well below the coordinator's --instance-timeout.",
    )
    coordinator_l2_event_reporting: bool = flag(
        False,
        env="LMCACHE_COORDINATOR_L2_EVENT_REPORTING",
        description="Report L2 store/lookup/delete events to the coordinator for fleet usage "
        "tracking and quota-based eviction.",
    )
    coordinator_l2_event_flush_interval: float = flag(
        1.0,
        gt=0,
        metavar="SECONDS",
        env="LMCACHE_COORDINATOR_L2_EVENT_FLUSH_INTERVAL",
        description="Seconds between L2 event batch flushes.",
    )

    coordinator_blend_timeout: float = flag(
        1.0,
        gt=0,
        metavar="SECONDS",
        env="LMCACHE_COORDINATOR_BLEND_TIMEOUT",
        description="CacheBlend (--engine-type blend) with a coordinator: how long a cb_unified_lookup waits "
        "for the coordinator's fleet match (also its HTTP timeout); past it the server matches locally.",
    )
    coordinator_blend_match_concurrency: int = flag(
        8,
        ge=1,
        le=1024,
        metavar="N",
        env="LMCACHE_COORDINATOR_BLEND_MATCH_CONCURRENCY",
        description="CacheBlend with a coordinator: fleet match queries in flight at most.",
    )

    @field_validator("coordinator_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
        return value.rstrip("/")

    @field_validator("coordinator_advertise_ip")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"must be an IPv4 or IPv6 address (got {value!r})") from None
        return value
