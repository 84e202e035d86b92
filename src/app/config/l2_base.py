"""What every `--l2-adapter` spec shares: the keys all types accept and the lazy class reference.

Each spec names its adapter as `impl = "module:Class"` (imported only when selected) and the pip extra
its client needs. `impl = None` means the backend is not part of this build: the spec validates, and
start-up fails with `--l2-adapter #N: type 'x' is not available in this build`.
"""

from __future__ import annotations

from typing import ClassVar

from lmcache.app.config.base import Section, flag
from lmcache.app.config.l1 import EvictionPolicy

__all__ = ("DEADLINE_FIELDS", "L2EvictionSpec", "L2SpecBase")

# Fields every spec has that configure the resilience wrapper (l2_factory.py), not the adapter itself.
DEADLINE_FIELDS = frozenset({"lookup_deadline_s", "store_deadline_s"})


class L2EvictionSpec(Section):
    """Optional per-adapter eviction (`"eviction": {...}` inside an adapter spec)."""

    eviction_policy: EvictionPolicy = flag(description="Eviction policy of this adapter.")
    trigger_watermark: float = flag(0.8, ge=0, le=1, description="Usage ratio that starts eviction.")
    eviction_ratio: float = flag(0.2, ge=0, le=1, description="Share of stored bytes freed per cycle.")


class L2SpecBase(Section):
    """Keys accepted by every adapter type."""

    impl: ClassVar[str | None] = None
    pip_extra: ClassVar[str | None] = None

    shared: bool = flag(False, description="The storage is shared by several servers (a fleet L2).")
    eviction: L2EvictionSpec | None = flag(None, description="Adapter-level eviction; absent disables it.")
    persist_enabled: bool = flag(True, description="Keep stored data when the server shuts down.")
    lookup_deadline_s: float = flag(
        5.0,
        gt=0,
        le=3600,
        description="Seconds a lookup, load, delete, listing or usage call of this adapter may take before "
        "it counts as a miss (and a failure for the circuit breaker).",
    )
    store_deadline_s: float = flag(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a store call of this adapter may take before it counts as failed.",
    )
