"""plugin: loads a user's class implementing the L2Adapter port (`module_path`, `class_name`).

The user's object is wrapped, not returned as is: every call is checked (one result per key) and an
exception from user code becomes a miss / failed store, logged and counted in `counters.backend_errors`,
so a buggy plugin behaves like a failing backend (and trips the breaker) instead of stalling the cascade.
Departure from the object format rule: the plugin receives and returns raw payload bytes; integrity
checks are its own business, since it owns its storage format.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_state import AdapterCounters, record_stores
from lmcache.adapters.storage._user_class import build_user_class
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("REQUIRED_METHODS", "PluginL2Adapter", "load_plugin")

logger = logging.getLogger(__name__)
REQUIRED_METHODS = ("store", "lookup_and_lock", "load", "unlock", "delete", "list_keys", "usage", "close")


def load_plugin(module_path: str, class_name: str, params: dict[str, Any]) -> Any:
    """Import, check and instantiate a plugin class.

    Raises:
        L2ConfigError: The module or class is missing, a port method is absent or not `async def`, or
            the constructor rejects `params`.
    """

    def lacking(cls: type) -> str | None:
        missing = [m for m in REQUIRED_METHODS if not inspect.iscoroutinefunction(getattr(cls, m, None))]
        if not missing:
            return None
        return f"does not implement the L2Adapter port: missing or not async: {', '.join(missing)}"

    return build_user_class("plugin", module_path, class_name, params, _is_class, lacking)


def _is_class(found: object) -> bool:
    return isinstance(found, type)


class PluginL2Adapter:
    """Delegates to a user's adapter, checking results and containing its exceptions."""

    def __init__(
        self,
        module_path: str,
        class_name: str,
        adapter_params: dict[str, Any] | None = None,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.name = f"{module_path}:{class_name}"
        self.inner = load_plugin(module_path, class_name, dict(adapter_params or {}))
        self.counters = AdapterCounters()

    def _failed(self, op: str, exc: BaseException) -> None:
        self.counters.backend_errors += 1
        logger.warning("plugin L2 %s: %s failed: %r", self.name, op, exc)

    async def _per_key(self, op: str, keys: Sequence[ObjectKey], *args: Any) -> list[bool]:
        if not keys:
            return []
        try:
            result = await getattr(self.inner, op)(keys, *args)
            out = [bool(x) for x in result]
            if len(out) != len(keys):
                raise ValueError(f"returned {len(out)} results for {len(keys)} keys")
            return out
        except Exception as exc:
            self._failed(op, exc)
            return [False] * len(keys)

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Delegate; a raising plugin is a failed store."""
        out = await self._per_key("store", keys, buffers)
        return record_stores(self.counters, keys, out, None)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Delegate; a raising plugin is an all-miss."""
        return await self._per_key("lookup_and_lock", keys)

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Delegate; a raising plugin is an all-miss."""
        out = await self._per_key("load", keys, buffers)
        self.counters.loads += len(out)
        self.counters.load_misses += len(out) - sum(out)
        return out

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Delegate; errors are logged."""
        try:
            await self.inner.unlock(keys)
        except Exception as exc:
            self._failed("unlock", exc)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Delegate; a raising plugin deleted nothing."""
        return await self._per_key("delete", keys)

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Delegate; a raising plugin lists nothing."""
        try:
            page = await self.inner.list_keys(cursor, limit)
            if not isinstance(page, KeyPage):
                raise TypeError(f"list_keys returned {type(page).__name__}, not KeyPage")
            return page
        except Exception as exc:
            self._failed("list_keys", exc)
            return KeyPage((), None)

    async def usage(self) -> L2Usage:
        """Delegate; a raising plugin reports nothing used."""
        try:
            usage = await self.inner.usage()
            if not isinstance(usage, L2Usage):
                raise TypeError(f"usage returned {type(usage).__name__}, not L2Usage")
            return usage
        except Exception as exc:
            self._failed("usage", exc)
            return L2Usage(0, 0)

    async def close(self) -> None:
        """Delegate (errors propagate, as the port allows for close)."""
        await self.inner.close()
