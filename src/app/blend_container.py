"""Composition root, CacheBlend part: the graph of `lmcache server --engine-type blend` (cacheblend.md).

A sub-container of `ServerContainer` (`providers.Container`), which hands it the storage engine's parts
and resolves its `server` only for `--engine-type blend|blend_legacy` (None for `default`).
`blend_legacy` is accepted with a warning and runs the same module (§6, "Decided"): no client that can
reach us speaks the legacy ops. With `--coordinator-url` the coordinator's blend directory is the match
source (§7), with the local index as the fallback. Building the server also hooks it into the engine
(`ServerContainer` hands the engine the registrar, which hears every committed store) and, with metrics
on, subscribes its gauges to the bus.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from lmcache.adapters.coordinator.blend_client import FleetBlendClient
from lmcache.adapters.telemetry.blend_metrics import BlendMetrics
from lmcache.adapters.transfer.fingerprint_numpy import NumpyFingerprintProbe
from lmcache.adapters.transfer.rope_registration import CpuRopeRegistrar
from lmcache.app.blend_wiring import BlendServer
from lmcache.app.config import ServerConfig
from lmcache.domain.blend_index import FingerprintIndex
from lmcache.domain.blend_lookup import BlendLookupService
from lmcache.domain.blend_prefetch import SparsePrefetcher
from lmcache.domain.blend_registry import RopeRegistry
from lmcache.domain.blend_retrieve import BlendRetriever
from lmcache.domain.blend_stash import BlendStash
from lmcache.domain.blend_store import BlendRegistrar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

    from lmcache.adapters.telemetry.event_bus import EventBus
    from lmcache.adapters.telemetry.server_metrics import ServerMetrics
    from lmcache.app.storage_loop import StorageLoop
    from lmcache.domain.cache_engine import CacheEngine
    from lmcache.ports.clock import Clock
    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("BlendContainer",)
logger = logging.getLogger("lmcache.blend")


def _on_off(value: object) -> str:
    return "off" if value is None else "on"


def _metrics_on(bus: EventBus | None, metrics: ServerMetrics) -> str:
    return "on" if bus is not None and metrics.enabled else "off"


def _temporary(prefetch_policy: str) -> bool:
    return prefetch_policy == "default"  # `retain` keeps what the sparse prefetch loaded


def _gauges(
    index: FingerprintIndex, lookups: BlendLookupService, stash: BlendStash
) -> dict[str, tuple[str, Callable[[], float]]]:
    return {
        "index_entries": ("Entries of the local CacheBlend fingerprint index.", lambda: float(len(index))),
        "active_lookups": ("cb_unified_lookup jobs in flight.", lambda: float(lookups.active)),
        "stashed_locks": ("Sparse read locks waiting for a retrieve.", lambda: float(stash.locks_held)),
    }


def _serving(
    server: BlendServer, engine_type: str, bus: EventBus | None, metrics: BlendMetrics | None
) -> BlendServer:
    """`server`, with metrics on subscribed to the bus."""
    if engine_type == "blend_legacy":
        logger.warning(
            "--engine-type blend_legacy: the legacy CacheBlend protocol is not implemented; serving the "
            "CacheBlend ops 25-33 of --engine-type blend instead"
        )
    if bus is not None and metrics is not None:
        bus.subscribe(metrics)
    return server


class BlendContainer(containers.DeclarativeContainer):
    """CacheBlend's object graph over the server's storage engine (module docstring)."""

    config = providers.Dependency(instance_of=ServerConfig)
    engine: providers.Dependency[CacheEngine] = providers.Dependency()
    memory: providers.Dependency[L1Memory] = providers.Dependency()
    adapters: providers.Dependency[Sequence[L2Adapter]] = providers.Dependency()
    arena: providers.Dependency[Callable[[], torch.Tensor]] = providers.Dependency()
    storage_loop: providers.Dependency[StorageLoop] = providers.Dependency()
    clock: providers.Dependency[Clock] = providers.Dependency()
    events: providers.Dependency[EventSink] = providers.Dependency()
    bus: providers.Dependency[EventBus | None] = providers.Dependency()
    metrics: providers.Dependency[ServerMetrics] = providers.Dependency()

    mp = config.provided.mp
    fleet_config = config.provided.coordinator
    fleet = providers.Selector(
        providers.Callable(_on_off, fleet_config.coordinator_url),
        on=providers.Singleton(
            FleetBlendClient,
            fleet_config.coordinator_url,
            fleet_config.coordinator_blend_timeout,
            fleet_config.coordinator_blend_match_concurrency,
        ),
        off=providers.Object(None),
    )
    index = providers.Singleton(FingerprintIndex, mp.chunk_size, providers.Singleton(NumpyFingerprintProbe))
    stash = providers.Singleton(BlendStash, engine.provided.l1)
    registry = providers.Singleton(RopeRegistry)
    prefetcher = providers.Singleton(
        SparsePrefetcher,
        engine.provided.l1,
        memory,
        adapters,
        temporary=providers.Callable(_temporary, config.provided.l2.l2_prefetch_policy),
        max_in_flight=config.provided.l2.l2_prefetch_max_in_flight,
        events=events,
    )
    lookups = providers.Singleton(
        BlendLookupService,
        engine,
        index,
        prefetcher,
        stash,
        clock,
        submit=storage_loop.provided.submit,
        fleet=fleet,
        segmented_prefix=mp.enable_segmented_prefix,
        events=events,
    )
    registrar = providers.Singleton(BlendRegistrar, index, fleet)
    retriever = providers.Singleton(
        BlendRetriever, engine.provided.l1, engine.provided.workers, registry, stash, mp.chunk_size, events
    )
    rope = providers.Singleton(CpuRopeRegistrar, engine.provided.workers, registry, arena)
    blend_metrics = providers.Selector(
        providers.Callable(_metrics_on, bus, metrics),
        on=providers.Singleton(
            BlendMetrics, metrics.provided.registry, providers.Callable(_gauges, index, lookups, stash)
        ),
        off=providers.Object(None),
    )
    server = providers.Singleton(
        _serving,
        providers.Singleton(
            BlendServer, index, stash, registry, lookups, retriever, rope, fleet, mp.session_ttl_seconds
        ),
        mp.engine_type,
        bus,
        blend_metrics,
    )
