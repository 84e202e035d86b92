"""Composition root, L2 part: the ordered cascade of `--l2-adapter` specs, each in its wrappers.

`L2Container` declares every part of one spec's adapter as a provider: the backend its spec names, the
eviction order and usage tracker of its `"eviction"`, the `EvictingL2Adapter`, the serde stages and
`SerdeL2Adapter` of its `"serde"`, and the `ResilientL2Adapter` around it. `adapters` hands those
providers to `l2_cascade.build_cascade`, which decides their order for each spec and closes what was built
when a later part fails. `StorageContainer` uses it as a sub-container (the server's quota table, event
sink and KV dtype resolver); benchmarks, `lmcache bench` and tests call `l2_adapters(specs)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.evicting import EvictingL2Adapter
from lmcache.adapters.storage.resilience import ResilientL2Adapter
from lmcache.adapters.storage.serde_adapter import SerdeL2Adapter, can_load_sized
from lmcache.app.config.errors import ConfigError
from lmcache.app.l2_cascade import L2Parts, build_cascade
from lmcache.domain.arc import ArcPolicy
from lmcache.domain.eviction import IsolatedLruPolicy, LruPolicy, NoopPolicy
from lmcache.domain.l2_eviction import L2_EVICTION_POLICIES, L2Capacity
from lmcache.domain.quotas import QuotaTable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.app.config.l2_base import L2SpecBase
    from lmcache.domain.eviction import EvictionPolicy
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.workers import WorkerRegistry
    from lmcache.ports.events import EventSink

__all__ = ("L2Container", "kv_dtype_resolver", "l2_adapters", "l2_policy")


def _backend(cls: type[Any], kwargs: dict[str, Any], label: str) -> Any:
    """The adapter a spec names (its class imported by the cascade), built from the spec's fields."""
    try:
        return cls(**kwargs)
    except L2ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def l2_policy(name: str, capacity_bytes: int, quotas: QuotaTable | None) -> EvictionPolicy:
    """The eviction order an adapter's `eviction_policy` names.

    Raises:
        ValueError: For a name outside `L2_EVICTION_POLICIES`, or IsolatedLRU without a quota table.
    """
    if name == "LRU":
        return LruPolicy()
    if name == "ARC":
        return ArcPolicy(capacity_bytes)
    if name == "IsolatedLRU":
        if quotas is None:
            raise ValueError("IsolatedLRU needs the server's quota table")
        return IsolatedLruPolicy(quotas)
    if name == "noop":
        return NoopPolicy()
    allowed = ", ".join(L2_EVICTION_POLICIES)
    raise ValueError(f"unknown L2 eviction policy {name!r} (expected one of {allowed})")


def _serde_stage(
    cls: type[Any],
    options: dict[str, Any],
    label: str,
    name: str,
    *,
    dtype_of: Callable[[ObjectKey], str | None] | None,
) -> Any:
    """One serde stage of an adapter's `"serde"` (fp8 is given the KV dtype resolver)."""
    if name == "fp8":
        options = {**options, "dtype_of": dtype_of}
    try:
        return cls(**options)
    except L2ConfigError as exc:
        raise ConfigError(f"{label}: serde {name!r}: {exc}") from exc


class L2Container(containers.DeclarativeContainer):
    """The L2 cascade's object graph (module docstring)."""

    specs: providers.Dependency[Sequence[L2SpecBase]] = providers.Dependency()
    resilient = providers.Dependency(instance_of=bool, default=True)
    # The per-cache_salt quotas IsolatedLRU reads (the server's; a fresh empty table per adapter if none).
    quotas = providers.Dependency(instance_of=QuotaTable, default=providers.Factory(QuotaTable))
    events: providers.Dependency[EventSink | None] = providers.Dependency(default=providers.Object(None))
    dtype_of: providers.Dependency[Callable[[ObjectKey], str | None] | None] = providers.Dependency(
        default=providers.Object(None)
    )

    backend = providers.Factory(_backend)
    eviction_order = providers.Factory(l2_policy, quotas=quotas)
    capacity = providers.Factory(L2Capacity)
    evicting = providers.Factory(EvictingL2Adapter, events=events)
    serde_stage = providers.Factory(_serde_stage, dtype_of=dtype_of)
    serde = providers.Factory(SerdeL2Adapter)
    resilience = providers.Factory(ResilientL2Adapter)
    parts = providers.Singleton(
        L2Parts,
        backend=backend.provider,
        l2_policy=eviction_order.provider,
        capacity=capacity.provider,
        evicting=evicting.provider,
        serde_stage=serde_stage.provider,
        serde=serde.provider,
        can_serde=providers.Object(can_load_sized),
        resilient=resilience.provider,
    )
    adapters = providers.Singleton(build_cascade, specs, parts, resilient)


def l2_adapters(
    specs: Sequence[L2SpecBase],
    resilient: bool = True,
    *,
    quotas: QuotaTable | None = None,
    events: EventSink | None = None,
    dtype_of: Callable[[ObjectKey], str | None] | None = None,
) -> list[Any]:
    """The cascade of `specs`, outside a server (benchmarks, `lmcache bench`, tests).

    Args:
        specs: Validated specs, in cascade order.
        resilient: Wrap each adapter in a deadline + circuit breaker (off only in tests of raw adapters).
        quotas: The per-cache_salt quotas IsolatedLRU eviction reads (a fresh empty table when None).
        events: Where per-adapter evictions are published.
        dtype_of: The element type of a key's KV (fp8 serde with `source_dtype` auto).
    """
    given = {"quotas": quotas, "events": events, "dtype_of": dtype_of}
    container = L2Container(
        specs=specs, resilient=resilient, **{k: v for k, v in given.items() if v is not None}
    )
    return list(container.adapters())


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
