"""Composition root of `lmcache trace replay|sweep`: the fresh storage engine one replay runs on.

The server's own L1 classes (`L1Manager`, `EvictionLoop`, the eviction policy `--eviction-policy`
names, the quota table), built from `ReplaySettings` on a `ReplayClock` that each record sets, with a
`ReplayCounter` as the event sink that fills the replay's stats. No L2, transport or telemetry: the
replay simulates L2 itself (`domain/trace_replay.py`).
"""

from __future__ import annotations

from dependency_injector import containers, providers

from lmcache.app.storage_container import l1_eviction_policy
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.quotas import QuotaTable
from lmcache.domain.trace_replay import ReplayEngine, ReplaySettings
from lmcache.domain.trace_stats import ReplayClock, ReplayCounter, ReplayStats

__all__ = ("ReplayContainer", "replay_engine")


class ReplayContainer(containers.DeclarativeContainer):
    """One replay's engine (module docstring)."""

    settings = providers.Dependency(instance_of=ReplaySettings)
    stats = providers.Singleton(ReplayStats)
    clock = providers.Singleton(ReplayClock)
    quotas = providers.Singleton(QuotaTable)
    arena = providers.Singleton(ArenaAllocator, settings.provided.l1_bytes, settings.provided.align_bytes)
    l1 = providers.Singleton(
        L1Manager,
        arena,
        l1_eviction_policy(settings.provided.eviction_policy, quotas),
        clock,
        providers.Singleton(ReplayCounter, stats),
        write_ttl_s=settings.provided.write_ttl_s,
        read_ttl_s=settings.provided.read_ttl_s,
    )
    eviction_loop = providers.Singleton(
        EvictionLoop, l1, settings.provided.trigger_watermark, settings.provided.eviction_ratio
    )
    engine = providers.Singleton(ReplayEngine, settings, l1, eviction_loop, clock, quotas, stats)


def replay_engine(settings: ReplaySettings) -> ReplayEngine:
    """A fresh engine for one replay (each call builds its own container)."""
    return ReplayContainer(settings=settings).engine()
