"""The coordinator adapter's settings: plain values mapped by name from CoordinatorConfig (app layer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("CoordinatorSettings",)


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """Plain values the coordinator adapter needs.

    Every field but `server_timeout` is the `CoordinatorConfig` field of the same name: its default, bounds
    and help live there only, and the app layer copies the values over by name (`settings_from_config`).
    """

    instance_timeout: float
    health_check_interval: float
    eviction_check_interval: float
    eviction_ratio: float
    trigger_watermark: float
    blend_chunk_size: int
    blend_probe_stride: int
    checkpoint_path: Path | None
    checkpoint_interval: float
    enable_startup_resync: bool
    resync_poll_interval: float
    resync_max_wait: float
    resync_page_size: int
    server_auth_token: str | None
    server_timeout: float = 10.0  # per call to a server; not a flag
