"""The eviction loop's step: watermark-triggered eviction plus IsolatedLRU's per-tenant quota enforcement.

The step is a plain method so tests call it directly; `domain/supervisor.py` runs it periodically on a
thread in production.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from lmcache.domain.events import EvictionReason

if TYPE_CHECKING:
    from lmcache.domain.l1_maintenance import L1Maintenance


class EvictionResult(NamedTuple):
    """What one step did: objects and bytes evicted over quotas and by the watermark."""

    quota_objects: int
    quota_bytes: int
    watermark_objects: int
    watermark_bytes: int


class EvictionLoop:
    """One eviction cycle over an L1 manager.

    Args:
        l1: The L1 store.
        trigger_watermark: Used/total ratio at which eviction starts (`--eviction-trigger-watermark`).
        eviction_ratio: Share of the used bytes freed per triggered cycle (`--eviction-ratio`).
    """

    def __init__(
        self, l1: L1Maintenance, trigger_watermark: float = 0.8, eviction_ratio: float = 0.2
    ) -> None:
        if not 0.0 <= trigger_watermark <= 1.0:
            raise ValueError(f"trigger_watermark must be in [0, 1], got {trigger_watermark}")
        if not 0.0 <= eviction_ratio <= 1.0:  # the spec allows 0: only on-demand eviction frees memory
            raise ValueError(f"eviction_ratio must be in [0, 1], got {eviction_ratio}")
        self._l1 = l1
        self.trigger_watermark = trigger_watermark
        self.eviction_ratio = eviction_ratio

    def step(self) -> EvictionResult:
        """Reap expired locks, evict over-quota tenants, then evict by watermark if usage passed it."""
        self._l1.reap_expired()
        quota_objects, quota_bytes = self._l1.evict_over_quota()
        stats = self._l1.stats()
        wm_objects = wm_bytes = 0
        if stats.total_bytes and stats.used_bytes / stats.total_bytes >= self.trigger_watermark:
            target = int(stats.used_bytes * self.eviction_ratio)
            wm_objects, wm_bytes = self._l1.evict(target, EvictionReason.WATERMARK)
        return EvictionResult(quota_objects, quota_bytes, wm_objects, wm_bytes)
