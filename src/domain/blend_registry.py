"""Instances registered with `cb_register_rope` (cacheblend.md §4.1): their rotation plan and scatter.

A registration needs the instance's `register_kv_cache` first; a second call replaces it. It is dropped
by `cb_unregister_rope`, by `unregister_kv_cache` and when the reaper reaps the instance (LMCache keeps
it across `unregister_kv_cache`; ours does not, so no registration outlives the memory it writes to).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmcache.domain.blend_rope import RopePlan
    from lmcache.ports.blend import BlendScatter

__all__ = ("RopeRegistration", "RopeRegistry")


@dataclass(frozen=True, slots=True)
class RopeRegistration:
    """One instance's CacheBlend registration."""

    instance_id: int
    model_name: str
    world_size: int
    plan: RopePlan
    scatter: BlendScatter


class RopeRegistry:
    """Thread-safe table of registrations keyed by instance id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, RopeRegistration] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, registration: RopeRegistration) -> None:
        """Add or replace (closing the replaced scatter)."""
        with self._lock:
            old = self._entries.get(registration.instance_id)
            self._entries[registration.instance_id] = registration
        if old is not None and old.scatter is not registration.scatter:
            old.scatter.close()

    def get(self, instance_id: int) -> RopeRegistration | None:
        """The registration, or None."""
        with self._lock:
            return self._entries.get(instance_id)

    def drop(self, instance_id: int) -> bool:
        """Remove and close; False when there was none."""
        with self._lock:
            old = self._entries.pop(instance_id, None)
        if old is None:
            return False
        old.scatter.close()
        return True

    def status(self) -> dict[str, Any]:
        """The `/status` fields: ids, `[model, world_size]` per id (as LMCache reports), and geometry."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda r: r.instance_id)
        return {
            "registered_cb_rope_instances": [r.instance_id for r in entries],
            "cb_rope_meta": {str(r.instance_id): [r.model_name, r.world_size] for r in entries},
            "cb_rope_geometry": {str(r.instance_id): dict(r.scatter.describe()) for r in entries},
        }
