"""The order of the L2 cascade: which parts `L2Container` (l2_container.py) builds for each spec, and when.

For each `--l2-adapter` spec in cascade order: its class is imported (only when selected; a type not
in this build, or a missing client package, fails here naming `--l2-adapter #N`), a spec field holding
another spec (fault_inject's `adapter`) is built first and passed in as the adapter object, then the
adapter is wrapped, from the backend out, in `EvictingL2Adapter` (its `"eviction"`: counts the bytes the
backend holds, so it sits under the serde and sees stored sizes), `SerdeL2Adapter` (its `"serde"`) and
`ResilientL2Adapter` (a deadline per call and a circuit breaker, from the spec's `lookup_deadline_s` and
`store_deadline_s`; see adapters/storage/resilience.py for why it is a wrapper). Nested specs get their own
eviction and serde, as LMCache honours an inner spec's own keys; only the outer adapter is made
resilient. If any part fails, what was already built is closed.

Nothing here names a concrete class: every object comes from one of the container's providers
(`L2Parts`), so the container stays the one place that builds L2 adapters and their wrappers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmcache.app.config.errors import ConfigError
from lmcache.app.config.l2_base import WRAPPER_FIELDS, L2SpecBase
from lmcache.app.l2_specs import capacity_of, load_adapter_class, serde_class, spec_type

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("L2Parts", "build_cascade")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class L2Parts:
    """The container's providers of one spec's parts (each called with that spec's values)."""

    backend: Callable[..., Any]  # (class, constructor kwargs, label) -> the adapter a spec names
    l2_policy: Callable[..., Any]  # (policy name, capacity bytes) -> the eviction order
    capacity: Callable[..., Any]  # L2Capacity's arguments -> the usage tracker
    evicting: Callable[..., Any]  # (adapter, tracker, index, label, header_align=) -> EvictingL2Adapter
    serde_stage: Callable[..., Any]  # (class, options, label, stage name) -> one serde stage
    serde: Callable[..., Any]  # (adapter, stages, max workers, label) -> SerdeL2Adapter
    can_serde: Callable[[Any], bool]  # whether an adapter loads objects of varying size
    resilient: Callable[..., Any]  # (adapter, name=, deadline_s=, store_deadline_s=) -> ResilientL2Adapter


def build_cascade(specs: Sequence[L2SpecBase], parts: L2Parts, resilient: bool = True) -> list[Any]:
    """Every adapter in cascade order (module docstring); on a failure, close the ones already built.

    Args:
        specs: Validated specs, in cascade order.
        parts: The container's providers.
        resilient: Wrap each adapter in a deadline + circuit breaker (off only in tests of raw adapters).
    """
    built: list[Any] = []
    try:
        for number, spec in enumerate(specs, start=1):
            adapter = _build(number, spec, built, parts)
            if resilient:
                built[-1] = adapter = parts.resilient(
                    adapter,
                    name=f"#{number} ({spec_type(spec)})",
                    deadline_s=spec.lookup_deadline_s,
                    store_deadline_s=spec.store_deadline_s,
                )
    except BaseException:
        for adapter in reversed(built):
            _close_quietly(adapter)
        raise
    return built


def _build(number: int, spec: L2SpecBase, built: list[Any], parts: L2Parts) -> Any:
    """Build one adapter (nested specs first) and append it to `built` (for cleanup on failure)."""
    cls = load_adapter_class(number, spec)
    kwargs = spec.model_dump(exclude={"type", *WRAPPER_FIELDS})
    nested = [name for name in type(spec).model_fields if isinstance(getattr(spec, name), L2SpecBase)]
    for name in nested:
        kwargs[name] = _build(number, getattr(spec, name), built, parts)
    label = f"--l2-adapter #{number} (type {spec_type(spec)!r})"
    adapter = parts.backend(cls, kwargs, label)
    for _ in nested:
        built.pop()  # the outer adapter owns (and closes) what it wraps
    built.append(adapter)
    for key in spec.ignored_keys:
        logger.warning("%s: ignoring %r (an LMCache key that has no effect here)", label, key)
    if spec.eviction is not None:
        built[-1] = adapter = _with_eviction(number, spec, adapter, label, parts)
    if spec.serde:
        built[-1] = adapter = _with_serde(spec, adapter, label, parts)
    return adapter


def _with_eviction(number: int, spec: L2SpecBase, adapter: Any, label: str, parts: L2Parts) -> Any:
    assert spec.eviction is not None
    capacity = capacity_of(spec)
    policy = spec.eviction.eviction_policy
    if capacity <= 0 and policy != "IsolatedLRU":
        # As in LMCache, where an adapter without a capacity gives no eviction signal: started, but said.
        logger.warning(
            '%s: "eviction" (%s) has no effect without a capacity; set max_capacity_gb > 0', label, policy
        )
        return adapter
    tracker = parts.capacity(
        policy,
        parts.l2_policy(policy, capacity),
        capacity,
        spec.eviction.trigger_watermark,
        spec.eviction.eviction_ratio,
    )
    align = 4096 if getattr(spec, "use_odirect", False) else 64
    return parts.evicting(adapter, tracker, number - 1, label, header_align=align)


def _with_serde(spec: L2SpecBase, adapter: Any, label: str, parts: L2Parts) -> Any:
    if not parts.can_serde(adapter):
        raise ConfigError(
            f'{label}: "serde" needs an adapter that loads objects of varying size '
            "(fs, mock, resp, s3, or fault_inject over one of them)"
        )
    stages = []
    workers = []
    for stage_spec in spec.serde or ():
        cls = serde_class(label, stage_spec.type)
        options = stage_spec.model_dump(exclude={"type", "max_workers"})
        stages.append(parts.serde_stage(cls, options, label, stage_spec.type))
        if stage_spec.max_workers is not None:
            workers.append(stage_spec.max_workers)
    return parts.serde(adapter, stages, max(workers) if workers else None, label)


def _close_quietly(adapter: Any) -> None:
    closer = getattr(adapter, "close", None)
    if closer is None:
        return
    try:
        result = closer()
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except Exception:
        logger.exception("closing L2 adapter %s after a start-up failure", type(adapter).__name__)


async def _await(awaitable: Any) -> None:
    await awaitable
