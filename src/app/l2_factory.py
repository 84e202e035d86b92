"""Builds the ordered L2 cascade from validated specs, importing each backend only when it is selected.

A spec whose backend is not part of this build fails here, at start-up, naming its `--l2-adapter #N`;
a backend whose optional client package is missing names the pip extra that brings it, and an adapter
that rejects its settings (L2ConfigError, e.g. a plugin class that does not conform) is named the same way.

Every adapter is wrapped in `ResilientL2Adapter` (a deadline per call and a circuit breaker; see
adapters/storage/resilience.py for why it is a wrapper), with the deadlines of its spec
(`lookup_deadline_s`, `store_deadline_s`; those fields go to the wrapper, not to the adapter). A spec
field holding another spec (fault_inject's `adapter`) is built first and passed in as the adapter
object; only the outer adapter is wrapped. Each spec's `"eviction"` and `"serde"` wrap the adapter it
builds (l2_wrappers.py), nested specs included, as LMCache honours an inner spec's own keys.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.resilience import ResilientL2Adapter
from lmcache.app.config.errors import ConfigError
from lmcache.app.config.l2_base import WRAPPER_FIELDS, L2SpecBase
from lmcache.app.l2_wrappers import wrap_services

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.quotas import QuotaTable
    from lmcache.ports.events import EventSink

__all__ = ("build_l2_adapters", "load_adapter_class")

logger = logging.getLogger(__name__)


def load_adapter_class(number: int, spec: L2SpecBase) -> type[Any]:
    """Import the class a spec names, or raise a ConfigError a person can act on."""
    if spec.impl is None:
        raise ConfigError(f"--l2-adapter #{number}: type {spec_type(spec)!r} is not available in this build")
    module_name, _, class_name = spec.impl.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "lmcache":
            raise  # our own module is missing: a packaging bug, shown as it is
        extra = f"; install lmcache[{spec.pip_extra}]" if spec.pip_extra else ""
        raise ConfigError(
            f"--l2-adapter #{number} (type {spec_type(spec)!r}) needs the optional package "
            f"{exc.name!r}{extra}"
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"--l2-adapter #{number}: {spec.impl} is not a class")
    return cls


def spec_type(spec: L2SpecBase) -> str:
    """The `"type"` string of a spec."""
    return str(getattr(spec, "type", type(spec).__name__))


def build_l2_adapters(
    specs: Sequence[L2SpecBase],
    resilient: bool = True,
    *,
    quotas: QuotaTable | None = None,
    events: EventSink | None = None,
    dtype_of: Callable[[ObjectKey], str | None] | None = None,
) -> list[Any]:
    """Construct every adapter in cascade order; on a failure, close the ones already built.

    Args:
        specs: Validated specs, in cascade order.
        resilient: Wrap each adapter in a deadline + circuit breaker (off only in tests of raw adapters).
        quotas: The per-cache_salt quotas IsolatedLRU eviction reads (a fresh empty table when None).
        events: Where per-adapter evictions are published.
        dtype_of: The element type of a key's KV (fp8 serde with `source_dtype` auto).
    """
    built: list[Any] = []
    services = {"quotas": quotas, "events": events, "dtype_of": dtype_of}
    try:
        for number, spec in enumerate(specs, start=1):
            adapter = _build(number, spec, built, services)
            if resilient:
                built[-1] = adapter = ResilientL2Adapter(
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


def _build(number: int, spec: L2SpecBase, built: list[Any], services: dict[str, Any]) -> Any:
    """Build one adapter (nested specs first) and append it to `built` (for cleanup on failure)."""
    cls = load_adapter_class(number, spec)
    kwargs = spec.model_dump(exclude={"type", *WRAPPER_FIELDS})
    nested = [name for name in type(spec).model_fields if isinstance(getattr(spec, name), L2SpecBase)]
    for name in nested:
        kwargs[name] = _build(number, getattr(spec, name), built, services)
    label = f"--l2-adapter #{number} (type {spec_type(spec)!r})"
    try:
        adapter = cls(**kwargs)
    except L2ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from exc
    for _ in nested:
        built.pop()  # the outer adapter owns (and closes) what it wraps
    built.append(adapter)
    built[-1] = adapter = wrap_services(number, spec, adapter, label=label, **services)
    return adapter


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
