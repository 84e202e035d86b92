"""What every `--l2-adapter` spec shares: the keys all types accept and the lazy class reference.

Each spec names its adapter as `impl = "module:Class"` (imported only when selected) and the pip extra
its client needs. `impl = None` means the backend is not part of this build: the spec validates, and
start-up fails with `--l2-adapter #N: type 'x' is not available in this build`.

Unknown keys are errors, except the keys LMCache 0.5.6 accepts on every adapter that mean nothing here
(`LMCACHE_IGNORED_KEYS`: `affinity_tag` picks an L1 tag, `per_op_workers` sizes its native thread
pools): they are dropped at validation and the factory logs one warning per key at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import PrivateAttr, field_validator, model_validator

from lmcache.app.config.base import Section, flag
from lmcache.app.config.l2_serde import SerdeSpec, check_chain
from lmcache.domain.l2_eviction import L2EvictionPolicyName

if TYPE_CHECKING:
    from pydantic import ModelWrapValidatorHandler

__all__ = ("DEADLINE_FIELDS", "LMCACHE_IGNORED_KEYS", "WRAPPER_FIELDS", "L2EvictionSpec", "L2SpecBase")

# Fields every spec has that configure the resilience wrapper (l2_cascade.py), not the adapter itself.
DEADLINE_FIELDS = frozenset({"lookup_deadline_s", "store_deadline_s"})
# Fields the factory turns into wrappers around the adapter (deadlines, serde); never constructor keywords.
WRAPPER_FIELDS = DEADLINE_FIELDS | {"serde"}
LMCACHE_IGNORED_KEYS = ("affinity_tag", "per_op_workers")


class L2EvictionSpec(Section):
    """Optional per-adapter eviction (`"eviction": {...}` inside an adapter spec)."""

    eviction_policy: L2EvictionPolicyName = flag(description="Eviction policy of this adapter.")
    trigger_watermark: float = flag(0.8, ge=0, le=1, description="Usage ratio that starts eviction.")
    eviction_ratio: float = flag(0.2, ge=0, le=1, description="Share of stored bytes freed per cycle.")


class L2SpecBase(Section):
    """Keys accepted by every adapter type."""

    impl: ClassVar[str | None] = None
    pip_extra: ClassVar[str | None] = None

    _ignored_keys: tuple[str, ...] = PrivateAttr(default=())

    shared: bool = flag(False, description="The storage is shared by several servers (a fleet L2).")
    eviction: L2EvictionSpec | None = flag(
        None, description="Adapter-level eviction (needs the adapter's capacity); absent disables it."
    )
    serde: list[SerdeSpec] | None = flag(
        None,
        description='Transforms around store and load: one stage ({"type": ...}) or a chain (a list) '
        "applied in order on store and reversed on load.",
    )
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

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        """LMCache keys this spec held that have no effect here (the factory warns about each)."""
        return self._ignored_keys

    @model_validator(mode="wrap")
    @classmethod
    def _drop_lmcache_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        ignored: tuple[str, ...] = ()
        if isinstance(data, dict):
            ignored = tuple(k for k in LMCACHE_IGNORED_KEYS if k in data)
            data = {k: v for k, v in data.items() if k not in ignored}
        spec = handler(data)
        if ignored and isinstance(spec, L2SpecBase):
            spec._ignored_keys = ignored
        return spec

    @field_validator("serde", mode="before")
    @classmethod
    def _one_stage_is_a_chain(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value  # LMCache's form: one stage, no list

    @field_validator("serde")
    @classmethod
    def _chain(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None:
            check_chain(value)
        return value
