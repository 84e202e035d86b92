"""native_plugin: a compiled connector (a CPython extension or pybind11 module) behind the L2 port.

The connector is `module_path.class_name(**adapter_params)`, a blocking object with batched calls that
may release the GIL; they run on a thread pool, one batch per call:

    batch_set(keys: list[str], values: list[buffer]) -> list[bool]      # store whole values
    batch_get(keys: list[str], buffers: list[writable buffer]) -> list[int]
        # per key: bytes copied into the buffer; the value's size (> len(buffer)) when it does not fit,
        # nothing copied; -1 when absent
    batch_exists(keys: list[str]) -> list[bool]
    batch_delete(keys: list[str]) -> list[bool]                         # optional (else deletes fail)
    list_keys() -> list[str]                                             # optional (else empty listings)
    close() -> None                                                      # optional

Values are whole stored objects (header + payload, object_format.py), so loads are verified and damage
is quarantined (deleted) like any backend; keys are `lmcache:<key_name>`. Departure from LMCache's
native connectors (completion through an event fd polled by the controller): a blocking batch call on
a worker thread completes the same work without a second notification channel. A missing module, class
or method fails start-up naming it; a connector call that raises is a backend error (counted, breaker).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_state import empty_page, page_of, tracked
from lmcache.adapters.storage._blocking import run_on
from lmcache.adapters.storage._load_outcomes import Outcome, decode_all, encode_all, too_large
from lmcache.adapters.storage._remote_tier import RemoteTier, parse_names
from lmcache.adapters.storage._user_class import build_user_class
from lmcache.adapters.storage.object_format import header_len_for, key_name, parse_key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

__all__ = ("REQUIRED", "NativePluginL2Adapter")

REQUIRED = ("batch_set", "batch_get", "batch_exists")
PREFIX = "lmcache:"
_WORKERS = 4


def load_connector(module_path: str, class_name: str, params: dict[str, Any]) -> Any:
    """Import and instantiate the connector; L2ConfigError names what is missing."""

    def lacking(cls: Any) -> str | None:
        missing = [name for name in REQUIRED if not callable(getattr(cls, name, None))]
        return f"lacks the connector methods {', '.join(missing)}" if missing else None

    return build_user_class("native_plugin", module_path, class_name, params, callable, lacking)


class NativePluginL2Adapter(RemoteTier):
    """Runs a native connector's batched calls on threads; see the module docstring."""

    kind = "native_plugin"

    def __init__(
        self,
        module_path: str,
        class_name: str,
        adapter_params: dict[str, Any] | None = None,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.name = f"{module_path}:{class_name}"
        self.connector = load_connector(module_path, class_name, dict(adapter_params or {}))
        self._init_tier(self.name, max_capacity_gb, persist_enabled)
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="lmcache-native-l2")

    async def _call(self, op: str, *args: Any) -> Any:
        """A connector call on a worker thread (waited for even when cancelled: it may touch buffers)."""
        return await run_on(self._pool, getattr(self.connector, op), *args)

    @staticmethod
    def _names(keys: Sequence[ObjectKey]) -> list[str]:
        return [PREFIX + key_name(k) for k in keys]

    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """batch_set of whole objects (header + payload joined: one copy)."""
        blobs = encode_all(keys, buffers)
        out = await self._answers("store", keys, lambda: self._call("batch_set", self._names(keys), blobs))
        return self._stores_done(keys, out)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """batch_exists; pin the hits."""
        present = await self._answers("lookup", keys, lambda: self._call("batch_exists", self._names(keys)))
        return self._locks.lock(keys, present)

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """batch_get into staging buffers of the expected object size, then verify and copy."""
        names = self._names(keys)
        staging = [
            bytearray(header_len_for(n[len(PREFIX) :].encode()) + b.nbytes)
            for n, b in zip(names, buffers, strict=True)
        ]
        try:
            sizes, refused = await self._get(names, staging)
        except Exception as exc:
            self._error("load", exc)
            return [False] * len(keys)
        blobs = [memoryview(b)[:size] if size >= 0 else None for b, size in zip(staging, sizes, strict=True)]
        outcomes = decode_all(keys, blobs, buffers, exact)
        for i, why in refused.items():
            outcomes[i] = why
        return await self._quarantine(keys, outcomes)

    async def _get(self, names: list[str], staging: list[bytearray]) -> tuple[list[int], dict[int, Outcome]]:
        """batch_get; returns the sizes (-1: absent) and the outcomes of objects refused as far too large.

        An object of another size than its staging buffer is read again whole, so the format check
        classifies it, unless it is far larger (`too_large`): the connector's size is not trusted for an
        allocation.
        """
        sizes = [int(size) for size in await self._call("batch_get", names, staging)]
        refused: dict[int, Outcome] = {}
        retry = []
        for i, size in enumerate(sizes):
            why = too_large(size, len(staging[i]))
            if why is not None:
                refused[i] = why
            elif size > len(staging[i]):
                retry.append(i)
        if retry:
            bigger = [bytearray(sizes[i]) for i in retry]
            again = await self._call("batch_get", [names[i] for i in retry], bigger)
            for i, buf, size in zip(retry, bigger, again, strict=True):
                staging[i], sizes[i] = buf, int(size)
        return sizes, refused

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """batch_delete (at once); a connector without it deletes nothing."""
        if not keys or not callable(getattr(self.connector, "batch_delete", None)):
            return [False] * len(keys)
        try:
            out = [bool(x) for x in await self._call("batch_delete", self._names(keys))]
        except Exception as exc:
            self._error("delete", exc)
            return [False] * len(keys)
        self._stored.difference_update(keys)
        return out

    async def _all_names(self) -> list[str]:
        if not callable(getattr(self.connector, "list_keys", None)):
            return []
        names = await self._call("list_keys")
        return sorted(str(n)[len(PREFIX) :] for n in names if str(n).startswith(PREFIX))

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """The connector's keys ordered by name (empty when it cannot list)."""
        try:
            names, nxt = page_of(await self._all_names(), cursor, limit)
        except Exception as exc:
            self._error("list", exc)
            return empty_page()
        return KeyPage(tuple(parse_names(names)), nxt)

    async def usage(self) -> L2Usage:
        """Sizes of the listed objects, from a batch_get into empty buffers (each answers its size)."""
        try:
            names = await self._all_names()
            sizes = await self._call("batch_get", [PREFIX + n for n in names], [bytearray(0) for _ in names])
        except Exception as exc:
            self._error("usage", exc)
            names, sizes = [], []
        pairs = []
        for name, size in zip(names, sizes, strict=True):
            try:
                pairs.append((parse_key_name(name), int(size)))
            except ValueError:
                continue
        return self._usage_of(p for p in pairs if p[1] >= 0)

    async def _release(self) -> None:
        if callable(getattr(self.connector, "close", None)):
            await self._call("close")
        self._pool.shutdown(wait=True)
