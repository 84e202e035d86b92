"""CacheBlend of `lmcache server --engine-type blend` (cacheblend.md): its object graph and lifecycle.

`build_blend` returns None for `--engine-type default`. `blend_legacy` is accepted with a warning and
runs the same module (§6, "Decided"): no client that can reach us speaks the legacy ops. With
`--coordinator-url` the coordinator's blend directory is the match source (§7), with the local index as
the fallback. The runtime merges `BlendServer.handlers` into the op table, calls `on_unregister` for
every unregistered or reaped instance, runs `expire` as a supervised loop and `stop` at shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmcache.adapters.coordinator.blend_client import FleetBlendClient
from lmcache.adapters.telemetry.blend_metrics import BlendMetrics
from lmcache.adapters.transfer.fingerprint_numpy import NumpyFingerprintProbe
from lmcache.adapters.transfer.rope_registration import CpuRopeRegistrar
from lmcache.adapters.transport.blend_handlers import BlendHandlers
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
    from lmcache.app.config import ServerConfig
    from lmcache.app.storage_loop import StorageLoop
    from lmcache.domain.cache_engine import CacheEngine
    from lmcache.ports.clock import Clock
    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("BlendServer", "build_blend")
logger = logging.getLogger("lmcache.blend")


@dataclass
class BlendServer:
    """The running CacheBlend services of one server."""

    index: FingerprintIndex
    stash: BlendStash
    registry: RopeRegistry
    lookups: BlendLookupService
    retriever: BlendRetriever
    rope: CpuRopeRegistrar
    fleet: FleetBlendClient | None
    session_ttl_s: float

    def handlers(self, end_session: Callable[[str], None]) -> dict[str, Callable[..., Any]]:
        """The cb_* handlers and the wrapped `end_session`."""
        return BlendHandlers(self.lookups, self.retriever, self.rope, end_session).table

    def start(self) -> None:
        """Start the fleet client (when there is a coordinator)."""
        if self.fleet is not None:
            self.fleet.start()

    def stop(self) -> None:
        """Stop the fleet client and drop every rope registration."""
        if self.fleet is not None:
            self.fleet.stop()
        for instance_id in list(self.registry.status()["registered_cb_rope_instances"]):
            self.registry.drop(instance_id)

    def on_unregister(self, instance_id: int) -> None:
        """An instance left (unregister or reaper): its rope registration goes with it."""
        self.registry.drop(instance_id)

    def expire(self) -> None:
        """Release lookups and stashes whose session TTL passed (a supervised loop step)."""
        self.lookups.expire(self.session_ttl_s)

    def status(self) -> dict[str, Any]:
        """The `/status` fields of CacheBlend."""
        doc = self.registry.status()
        doc["active_cb_lookups"] = self.lookups.active
        doc["cb_blend"] = {
            "index_entries": len(self.index),
            "index_scopes": self.index.scopes(),
            "registered_total": self.index.registered_total,
            "removed_stale_total": self.index.removed_stale_total,
            "stashed_requests": len(self.stash),
            "stashed_sparse_locks": self.stash.locks_held,
            "fleet": self.fleet is not None,
            "fleet_fallbacks": self.lookups.fleet_fallbacks,
            "segmented_prefix": self.lookups.segmented_prefix,
        }
        return doc


def build_blend(
    config: ServerConfig,
    engine: CacheEngine,
    memory: L1Memory,
    adapters: Sequence[L2Adapter],
    arena: torch.Tensor,
    storage_loop: StorageLoop,
    clock: Clock,
    events: EventSink,
    bus: EventBus | None,
    metrics: ServerMetrics,
) -> BlendServer | None:
    """The CacheBlend services for `--engine-type blend|blend_legacy`, or None for `default`."""
    mp = config.mp
    if mp.engine_type == "default":
        return None
    if mp.engine_type == "blend_legacy":
        logger.warning(
            "--engine-type blend_legacy: the legacy CacheBlend protocol is not implemented; serving the "
            "CacheBlend ops 25-33 of --engine-type blend instead"
        )
    fleet = None
    if config.coordinator.coordinator_url is not None:
        fleet = FleetBlendClient(
            config.coordinator.coordinator_url,
            config.coordinator.coordinator_blend_timeout,
            config.coordinator.coordinator_blend_match_concurrency,
        )
    index = FingerprintIndex(mp.chunk_size, NumpyFingerprintProbe())
    stash = BlendStash(engine.l1)
    registry = RopeRegistry()
    prefetcher = SparsePrefetcher(
        engine.l1,
        memory,
        adapters,
        temporary=config.l2.l2_prefetch_policy == "default",
        max_in_flight=config.l2.l2_prefetch_max_in_flight,
        events=events,
    )
    lookups = BlendLookupService(
        engine,
        index,
        prefetcher,
        stash,
        clock,
        submit=storage_loop.submit,
        fleet=fleet,
        segmented_prefix=mp.enable_segmented_prefix,
        events=events,
    )
    engine.store_listener = BlendRegistrar(index, fleet)
    retriever = BlendRetriever(engine.l1, engine.workers, registry, stash, mp.chunk_size, events)
    rope = CpuRopeRegistrar(engine.workers, registry, arena)
    server = BlendServer(index, stash, registry, lookups, retriever, rope, fleet, mp.session_ttl_seconds)
    if bus is not None and metrics.enabled:
        gauges = {
            "index_entries": (
                "Entries of the local CacheBlend fingerprint index.",
                lambda: float(len(index)),
            ),
            "active_lookups": ("cb_unified_lookup jobs in flight.", lambda: float(lookups.active)),
            "stashed_locks": ("Sparse read locks waiting for a retrieve.", lambda: float(stash.locks_held)),
        }
        bus.subscribe(BlendMetrics(metrics.registry, gauges))
    return server
