"""L2 policies and the `--l2-adapter` cascade, a union discriminated on `"type"`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from lmcache.app.config.base import Section, flag
from lmcache.app.config.l2_base import L2SpecBase
from lmcache.app.config.l2_local import (
    DaxSpec,
    FsNativeSpec,
    FsSpec,
    MockSpec,
    NativePluginSpec,
    PluginSpec,
    RawBlockSpec,
)
from lmcache.app.config.l2_remote import (
    AerospikeSpec,
    HfBucketSpec,
    MooncakeStoreSpec,
    NixlStoreDynamicSpec,
    NixlStoreSpec,
    RespSpec,
    S3Spec,
    ValkeySpec,
)
from lmcache.domain.prefetch_controller import PrefetchPolicy
from lmcache.domain.store_controller import StorePolicy

__all__ = ("FaultInjectSpec", "L2AdapterSpec", "L2Config")

_MAX_POSITIONS = 10_000


class FaultInjectSpec(L2SpecBase):
    """fault_inject: wraps another adapter spec and drops loads or fails stores on purpose (tests, chaos).

    Not in the user-facing spec's list of types: it is a testing aid, like the upstream fault-injection
    hooks, selected the same way so a chaos drill needs no code change. LMCache's form is accepted
    too: `inner` (our `adapter`), `rate` (our `load_drop_rate`), `gap_indices` and `gap_tail_ratios`.
    """

    type: Literal["fault_inject"]
    impl = "lmcache.adapters.storage.fault_inject:FaultInjectL2Adapter"
    adapter: L2AdapterSpec = flag(
        description="The wrapped adapter's spec (any type); LMCache calls it inner."
    )
    seed: int = flag(0, description="Seed of the deterministic per-key choices.")
    load_drop_rate: float = flag(
        0.0, ge=0, le=1, description="Share of keys whose loads are dropped; LMCache calls it rate."
    )
    drop_load_indices: list[int] = flag(
        [], description="0-based sequence numbers of object loads to drop (counted across calls)."
    )
    gap_indices: list[Annotated[int, Field(ge=0)]] = flag(
        [],
        max_length=_MAX_POSITIONS,
        description="Positions (from the head, 0-based) in each lookup batch whose loads are dropped.",
    )
    gap_tail_ratios: list[Annotated[float, Field(ge=0, le=1)]] = flag(
        [],
        max_length=_MAX_POSITIONS,
        description="Positions to drop as distance from the batch's tail over its length (0 last, 1 first).",
    )
    store_fail_rate: float = flag(0.0, ge=0, le=1, description="Share of keys whose stores fail.")
    fail_all_stores: bool = flag(False, description="Fail every store.")

    @model_validator(mode="before")
    @classmethod
    def _lmcache_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for ours, theirs in (("adapter", "inner"), ("load_drop_rate", "rate")):
                if theirs in data:
                    if ours in data:
                        raise ValueError(f"give {ours!r} or LMCache's {theirs!r}, not both")
                    data = {ours if k == theirs else k: v for k, v in data.items()}
        return data


L2AdapterSpec = Annotated[
    NixlStoreSpec
    | NixlStoreDynamicSpec
    | FsSpec
    | FsNativeSpec
    | MockSpec
    | MooncakeStoreSpec
    | AerospikeSpec
    | S3Spec
    | RespSpec
    | ValkeySpec
    | HfBucketSpec
    | PluginSpec
    | NativePluginSpec
    | RawBlockSpec
    | DaxSpec
    | FaultInjectSpec,
    Field(discriminator="type"),
]
FaultInjectSpec.model_rebuild()


class L2Config(Section):
    """L2 store and prefetch policies and the adapter cascade."""

    l2_store_policy: StorePolicy = flag(  # the names live with the controllers (domain/)
        "default",
        description="default: every adapter stores every key and L1 keeps it; skip_l1: every "
        "adapter stores it, then L1 drops it (buffer-only mode).",
    )
    l2_prefetch_policy: PrefetchPolicy = flag(
        "default",
        description="default: load from the lowest-index adapter holding a key, prefetched keys "
        "freed after their readers; retain: same plan, keys kept in L1.",
    )
    l2_prefetch_max_in_flight: int = flag(
        8, gt=0, metavar="N", description="Concurrent L2 loads the prefetch controller may issue."
    )
    periodic_notifier_interval_ms: float = flag(
        5,
        gt=0,
        metavar="MS",
        description="Period of the notifier that wakes controller loops of adapters "
        "without native completion callbacks.",
    )
    l2_adapter: list[L2AdapterSpec] = flag(
        [],
        description='One L2 adapter as JSON with a "type" (nixl_store, nixl_store_dynamic, fs, fs_native, '
        "mock, mooncake_store, aerospike, s3, resp, valkey, hfbucket, plugin, native_plugin, raw_block, dax, "
        'fault_inject); repeat for a cascade, in order; each may hold "eviction" and "serde". Flags replace '
        "a profile's whole list.",
    )
