"""The data services the L2 factory puts around one adapter from its spec: eviction, then serde.

Order, from the backend out: the adapter, `EvictingL2Adapter` (its `"eviction"`: counts the bytes the
backend holds, so it sits under the serde and sees stored sizes), `SerdeL2Adapter` (its `"serde"`), and
last the resilience wrapper the factory adds. A serde stage's class is imported only when a spec names it,
and a missing client package names the pip extra that brings it, like an adapter's.

Also here: the one warning per LMCache key a spec held that means nothing to us (`affinity_tag`, ...).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.evicting import EvictingL2Adapter
from lmcache.app.config.errors import ConfigError
from lmcache.domain.l2_eviction import L2Capacity, make_l2_policy
from lmcache.domain.quotas import QuotaTable
from lmcache.domain.units import gb_to_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.app.config.l2_base import L2SpecBase
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.workers import WorkerRegistry
    from lmcache.ports.events import EventSink

__all__ = ("SERDE_IMPLS", "capacity_of", "kv_dtype_resolver", "wrap_services")

logger = logging.getLogger(__name__)

# serde "type" -> ("module:Class", pip extra of its client or None)
SERDE_IMPLS: dict[str, tuple[str, str | None]] = {
    "fp8": ("lmcache.adapters.storage.serde_fp8:Fp8Serde", None),
    "aesgcm": ("lmcache.adapters.storage.serde_aesgcm:AesGcmSerde", "aesgcm"),
    "zstd": ("lmcache.adapters.storage.serde_zstd:ZstdSerde", "zstd"),
}


def wrap_services(
    number: int,
    spec: L2SpecBase,
    adapter: Any,
    *,
    label: str,
    quotas: QuotaTable | None = None,
    events: EventSink | None = None,
    dtype_of: Callable[[ObjectKey], str | None] | None = None,
) -> Any:
    """`adapter` inside the wrappers its spec asks for (or itself).

    Raises:
        ConfigError: Eviction without a capacity, a serde stage that cannot start (key file, missing
            package), or a serde over an adapter that cannot load objects of varying size.
    """
    for key in spec.ignored_keys:
        logger.warning("%s: ignoring %r (an LMCache key that has no effect here)", label, key)
    if spec.eviction is not None:
        adapter = _with_eviction(number, spec, adapter, label, quotas, events)
    if spec.serde:
        adapter = _with_serde(spec, adapter, label, dtype_of)
    return adapter


def capacity_of(spec: L2SpecBase) -> int:
    """The capacity an adapter's spec gives it in bytes (`max_capacity_gb`, mock's `max_size_gb`), or 0."""
    for field in ("max_capacity_gb", "max_size_gb"):
        value = getattr(spec, field, None)
        if isinstance(value, int | float) and value > 0:
            return gb_to_bytes(float(value))
    return 0


def _with_eviction(
    number: int,
    spec: L2SpecBase,
    adapter: Any,
    label: str,
    quotas: QuotaTable | None,
    events: EventSink | None,
) -> Any:
    assert spec.eviction is not None
    capacity = capacity_of(spec)
    policy = spec.eviction.eviction_policy
    if capacity <= 0 and policy != "IsolatedLRU":
        # As in LMCache, where an adapter without a capacity gives no eviction signal: started, but said.
        logger.warning(
            '%s: "eviction" (%s) has no effect without a capacity; set max_capacity_gb > 0', label, policy
        )
        return adapter
    tracker = L2Capacity(
        policy,
        make_l2_policy(policy, capacity, quotas if quotas is not None else QuotaTable()),
        capacity,
        spec.eviction.trigger_watermark,
        spec.eviction.eviction_ratio,
    )
    align = 4096 if getattr(spec, "use_odirect", False) else 64
    return EvictingL2Adapter(adapter, tracker, number - 1, label, events, align)


def _with_serde(
    spec: L2SpecBase, adapter: Any, label: str, dtype_of: Callable[[ObjectKey], str | None] | None
) -> Any:
    from lmcache.adapters.storage.serde_adapter import SerdeL2Adapter, can_load_sized

    if not can_load_sized(adapter):
        raise ConfigError(
            f'{label}: "serde" needs an adapter that loads objects of varying size '
            "(fs, mock, resp, s3, or fault_inject over one of them)"
        )
    stages = []
    workers = []
    for stage_spec in spec.serde or ():
        impl, extra = SERDE_IMPLS[stage_spec.type]
        cls = _serde_class(label, stage_spec.type, impl, extra)
        options = stage_spec.model_dump(exclude={"type", "max_workers"})
        if stage_spec.type == "fp8":
            options["dtype_of"] = dtype_of
        try:
            stages.append(cls(**options))
        except L2ConfigError as exc:
            raise ConfigError(f"{label}: serde {stage_spec.type!r}: {exc}") from exc
        if stage_spec.max_workers is not None:
            workers.append(stage_spec.max_workers)
    return SerdeL2Adapter(adapter, stages, max(workers) if workers else None, label)


def _serde_class(label: str, name: str, impl: str, extra: str | None) -> Any:
    module_name, _, class_name = impl.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "lmcache":
            raise  # our own module is missing: a packaging bug, shown as it is
        hint = f"; install lmcache[{extra}]" if extra else ""
        raise ConfigError(f"{label}: serde {name!r} needs the optional package {exc.name!r}{hint}") from exc
    return getattr(module, class_name)


def kv_dtype_resolver(workers: WorkerRegistry) -> Callable[[ObjectKey], str | None]:
    """The element type of a key's KV, from the layouts registered for its model (fp8 `source_dtype` auto).

    None when no registration of that model is known or its layouts disagree (mixed dtypes).
    """

    def dtype_of(key: ObjectKey) -> str | None:
        found: set[str] = set()
        for worker in workers.workers():
            if worker.model_name != key.model_name:
                continue
            layout = worker.layout
            groups = getattr(layout, "groups", None)
            if groups is not None:
                found.update(str(group.geometry.dtype) for group in groups)
            elif getattr(layout, "dtype", None) is not None:
                found.add(str(layout.dtype))
        return found.pop().removeprefix("torch.") if len(found) == 1 else None

    return dtype_of
