"""`lmcache coordinator`: every flag of coordinator-command.md, its env fallbacks and env-only knobs.

The model is flat (YAML keys are the field names) because the coordinator has a single section. The
checkpoint flags are not on the spec page; LMCache added them later and the fleet issue asks for them.
"""

from __future__ import annotations

from pathlib import Path

from lmcache.app.config.base import Section, flag
from lmcache.app.config.logging import LogLevel, log_level_field

__all__ = ("CoordinatorConfig",)

_ENV = "LMCACHE_MP_COORDINATOR_"


class CoordinatorConfig(Section):
    """The fleet coordinator: membership, L2 quotas and eviction, the CacheBlend directory."""

    log_level: LogLevel = log_level_field()
    host: str = flag(
        "0.0.0.0",
        min_length=1,
        metavar="HOST",
        env=f"{_ENV}HOST",
        description="Address the coordinator's HTTP server binds.",
    )
    port: int = flag(9300, ge=1, le=65535, metavar="PORT", env=f"{_ENV}PORT", description="HTTP port.")
    instance_timeout: float = flag(
        30,
        gt=0,
        metavar="SECS",
        env=f"{_ENV}INSTANCE_TIMEOUT",
        description="Seconds without a heartbeat after which an instance is evicted.",
    )
    health_check_interval: float = flag(
        10,
        ge=0,
        metavar="SECS",
        env=f"{_ENV}HEALTH_CHECK_INTERVAL",
        description="Seconds between health-check sweeps; 0 disables the loop.",
    )
    eviction_check_interval: float = flag(
        5,
        ge=0,
        metavar="SECS",
        env=f"{_ENV}EVICTION_CHECK_INTERVAL",
        description="Seconds between L2 eviction sweeps; 0 disables the loop.",
    )
    eviction_ratio: float = flag(
        0.2,
        ge=0,
        le=1,
        metavar="RATIO",
        env=f"{_ENV}EVICTION_RATIO",
        description="Fraction of a salt's tracked keys (by count) evicted per cycle.",
    )
    trigger_watermark: float = flag(
        1.0,
        gt=0,
        le=1,
        metavar="RATIO",
        env=f"{_ENV}TRIGGER_WATERMARK",
        description="Eviction fires when usage reaches this fraction of the quota (0 exclusive).",
    )
    blend_chunk_size: int = flag(
        256,
        gt=0,
        metavar="N",
        env=f"{_ENV}BLEND_CHUNK_SIZE",
        description="Tokens per chunk of the CacheBlend directory; must equal the "
        "blend servers' --chunk-size.",
    )
    blend_probe_stride: int = flag(
        1,
        ge=1,
        metavar="N",
        env=f"{_ENV}BLEND_PROBE_STRIDE",
        description="Positions between CacheBlend match probes; 1 probes every offset.",
    )
    timeout_keep_alive: float = flag(
        10,
        gt=0,
        metavar="SECS",
        env=f"{_ENV}TIMEOUT_KEEP_ALIVE",
        description="Seconds idle HTTP connections stay open; keep above the servers' heartbeat interval.",
    )
    checkpoint_path: Path | None = flag(
        None,
        metavar="PATH",
        description="File where quotas and the L2 key directory are saved "
        "atomically and reloaded at start-up.",
    )
    checkpoint_interval: float = flag(
        60, gt=0, metavar="SECS", description="Seconds between checkpoints (with --checkpoint-path)."
    )
    enable_startup_resync: bool = flag(
        True,
        cli=False,
        env=f"{_ENV}ENABLE_STARTUP_RESYNC",
        description="Rebuild the L2 key directory from a live server at start.",
    )
    resync_poll_interval: float = flag(
        1,
        gt=0,
        cli=False,
        env=f"{_ENV}RESYNC_POLL_INTERVAL",
        description="Seconds between polls for a live server to resync from.",
    )
    resync_max_wait: float = flag(
        60,
        ge=0,
        cli=False,
        env=f"{_ENV}RESYNC_MAX_WAIT",
        description="Seconds the start-up resync waits for a live server.",
    )
    resync_page_size: int = flag(
        1000,
        gt=0,
        le=10000,
        cli=False,
        env=f"{_ENV}RESYNC_PAGE_SIZE",
        description="Keys per GET /l2/keys page during resync.",
    )
    server_auth_token: str | None = flag(
        None,
        cli=False,
        env=f"{_ENV}SERVER_AUTH_TOKEN",
        description="Bearer token sent on the coordinator's calls to servers (DELETE /l2, GET /l2/keys, "
        "prefetches): the servers' --http-auth-token.",
    )
