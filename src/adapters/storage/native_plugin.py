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

import asyncio
import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_mixins import CountedLoads, PinnedReads
from lmcache.adapters.storage._adapter_state import (
    AdapterCounters,
    InFlight,
    LockTable,
    page_of,
    record_stores,
    usage_by_salt,
)
from lmcache.adapters.storage._load_outcomes import (
    Outcome,
    damaged_keys,
    encode_all,
    quarantine_remote,
)
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import (
    CorruptObjectError,
    decode_into,
    header_len_for,
    key_name,
    parse_key_name,
)
from lmcache.domain.units import gb_to_bytes
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("REQUIRED", "NativePluginL2Adapter")

logger = logging.getLogger(__name__)
REQUIRED = ("batch_set", "batch_get", "batch_exists")
PREFIX = "lmcache:"
_WORKERS = 4


def load_connector(module_path: str, class_name: str, params: dict[str, Any]) -> Any:
    """Import and instantiate the connector; L2ConfigError names what is missing."""
    where = f"native_plugin {module_path}:{class_name}"
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise L2ConfigError(f"{where}: cannot import module {module_path!r} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise L2ConfigError(f"{where}: module {module_path!r} has no class {class_name!r}")
    missing = [name for name in REQUIRED if not callable(getattr(cls, name, None))]
    if missing:
        raise L2ConfigError(f"{where} lacks the connector methods {', '.join(missing)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise L2ConfigError(f"{where}: adapter_params do not fit its constructor ({exc})") from exc


class NativePluginL2Adapter(PinnedReads, CountedLoads):
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
        self.capacity_bytes = gb_to_bytes(max_capacity_gb)
        self.persist = persist_enabled
        self.counters = AdapterCounters()
        self._locks = LockTable()
        self._inflight = InFlight()
        self._stored: set[ObjectKey] = set()
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="lmcache-native-l2")
        self._closed = False

    def _error(self, op: str, exc: BaseException) -> None:
        self.counters.backend_errors += 1
        logger.warning("native_plugin L2 %s: %s failed: %r", self.name, op, exc)

    async def _call(self, op: str, *args: Any) -> Any:
        """A connector call on a worker thread (waited for even when cancelled: it may touch buffers)."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, getattr(self.connector, op), *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.gather(future, return_exceptions=True)
            raise

    @staticmethod
    def _names(keys: Sequence[ObjectKey]) -> list[str]:
        return [PREFIX + key_name(k) for k in keys]

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """batch_set of whole objects (header + payload joined: one copy)."""
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            blobs = encode_all(keys, buffers)
            try:
                out = [bool(ok) for ok in await self._call("batch_set", self._names(keys), blobs)]
                if len(out) != len(keys):
                    raise ValueError(f"batch_set returned {len(out)} results for {len(keys)} keys")
            except Exception as exc:
                self._error("store", exc)
                out = [False] * len(keys)
            return record_stores(self.counters, keys, out, None if self.persist else self._stored)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """batch_exists; pin the hits."""
        if not keys:
            return []
        try:
            present = [bool(x) for x in await self._call("batch_exists", self._names(keys))]
        except Exception as exc:
            self._error("lookup", exc)
            present = [False] * len(keys)
        return self._locks.lock(keys, present)

    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """batch_get into staging buffers of the expected object size, then verify and copy."""
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            names = self._names(keys)
            staging = [
                bytearray(header_len_for(n[len(PREFIX) :].encode()) + b.nbytes)
                for n, b in zip(names, buffers, strict=True)
            ]
            try:
                sizes = list(await self._call("batch_get", names, staging))
                retry = [i for i, size in enumerate(sizes) if size > len(staging[i])]
                if retry:  # another size than expected: read it whole so the format check classifies it
                    bigger = [bytearray(sizes[i]) for i in retry]
                    again = await self._call("batch_get", [names[i] for i in retry], bigger)
                    for i, buf, size in zip(retry, bigger, again, strict=True):
                        staging[i], sizes[i] = buf, size
            except Exception as exc:
                self._error("load", exc)
                return [False] * len(keys)
            outcomes: list[Outcome] = []
            for key, blob, size, dest in zip(keys, staging, sizes, buffers, strict=True):
                if size < 0:
                    outcomes.append(False)
                    continue
                try:
                    got = decode_into(key, memoryview(blob)[:size], dest, exact)
                    outcomes.append(True if exact else got)
                except CorruptObjectError as exc:
                    outcomes.append(exc)
            await quarantine_remote(
                self.delete, self.counters, damaged_keys(keys, outcomes), logger, "native_plugin"
            )
            return outcomes

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
            return KeyPage((), None)
        keys = []
        for name in names:
            try:
                keys.append(parse_key_name(name))
            except ValueError:
                continue
        return KeyPage(tuple(keys), nxt)

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
        used, count, by_salt = usage_by_salt(p for p in pairs if p[1] >= 0)
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    async def close(self) -> None:
        """Finish calls in flight, delete this run's objects unless `persist_enabled`, close the connector."""
        if self._closed:
            return
        await self._inflight.drain()
        if self._stored:
            await self.delete(list(self._stored))
        closer = getattr(self.connector, "close", None)
        if callable(closer):
            await self._call("close")
        self._pool.shutdown(wait=True)
        self._closed = True
