"""CacheBlend of `lmcache server --engine-type blend` (cacheblend.md): its running services' lifecycle.

The container (`blend_container.py`) builds the services and this `BlendServer` over them, and merges
CacheBlend's ops (over `lookups`, `retriever` and `rope`) into the op table (`container.py`). The runtime
calls `on_unregister` for every unregistered or reaped instance, runs `expire` as a supervised loop and
`stop` at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmcache.adapters.coordinator.blend_client import FleetBlendClient
    from lmcache.adapters.transfer.rope_registration import CpuRopeRegistrar
    from lmcache.domain.blend_index import FingerprintIndex
    from lmcache.domain.blend_lookup import BlendLookupService
    from lmcache.domain.blend_registry import RopeRegistry
    from lmcache.domain.blend_retrieve import BlendRetriever
    from lmcache.domain.blend_stash import BlendStash

__all__ = ("BlendServer",)


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
