"""aerospike: an Aerospike cluster through the official Python client (`pip install lmcache[aerospike]`).

Each object (header + payload, object_format.py) is split into records of at most `segment` bytes, in
`namespace`/`set_name` under the user keys `<key_name>#<i>`: the first record also holds the segment
count (`n`) and the key name (`k`, for listings), and is written last, so a reader sees a whole object
or none. `segment` is `target_segment_bytes`, else `max_record_bytes` less 4 KiB of record overhead,
else 1 MiB less 4 KiB (Aerospike's default write-block size caps a record at 1 MiB). Records live for
`default_ttl_seconds` (0: the namespace default). The blocking client runs on `num_workers` threads.

Not tested against a live server here (none is reachable from this machine): the contract suite runs
this adapter over a fake client module with the same calls (`tests/fakes/aerospike_client.py`), and the
real client's refusal to connect is checked. Connection failures at start-up fail with the hosts named.
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
    decode_all,
    encode_all,
    quarantine_remote,
)
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import key_name, parse_key_name
from lmcache.domain.units import gb_to_bytes
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("AerospikeL2Adapter", "parse_hosts")

logger = logging.getLogger(__name__)
_RECORD_OVERHEAD = 4096
_DEFAULT_RECORD = 1 << 20


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]` (port 3000 when omitted) as the client's host list."""
    out = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host, int(port)) if host else (item.strip(), 3000))
    return out


class AerospikeL2Adapter(PinnedReads, CountedLoads):
    """Aerospike L2 tier; see the module docstring."""

    kind = "aerospike"

    def __init__(
        self,
        hosts: str,
        namespace: str = "lmcache",
        set_name: str = "kv_chunks",
        num_workers: int = 8,
        read_timeout_ms: int = 1000,
        write_timeout_ms: int = 2000,
        default_ttl_seconds: int = 86400,
        target_segment_bytes: int = 0,
        max_record_bytes: int = 0,
        username: str = "",
        password: str = "",
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        try:
            self.aero = importlib.import_module("aerospike")
            self.errors = importlib.import_module("aerospike.exception")
        except ModuleNotFoundError as exc:
            raise L2ConfigError("needs the optional package 'aerospike'; install lmcache[aerospike]") from exc
        self.ns, self.set = namespace, set_name
        self.ttl = default_ttl_seconds
        self.segment = target_segment_bytes or (max_record_bytes or _DEFAULT_RECORD) - _RECORD_OVERHEAD
        self.capacity_bytes = gb_to_bytes(max_capacity_gb)
        self.persist = persist_enabled
        self.counters = AdapterCounters()
        self._locks = LockTable()
        self._inflight = InFlight()
        self._stored: set[ObjectKey] = set()
        self._read = {"total_timeout": read_timeout_ms}
        self._write = {"total_timeout": write_timeout_ms}
        config = {"hosts": parse_hosts(hosts), "policies": {"read": self._read, "write": self._write}}
        try:
            client = self.aero.client(config)
            self.client = client.connect(username, password) if username else client.connect()
        except self.errors.AerospikeError as exc:
            raise L2ConfigError(f"aerospike: cannot connect to {hosts}: {exc}") from exc
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-aerospike-l2")
        self._closed = False

    def _key(self, name: str, part: int) -> tuple[str, str, str]:
        return (self.ns, self.set, f"{name}#{part}")

    def _error(self, op: str, exc: BaseException) -> None:
        self.counters.backend_errors += 1
        logger.warning("aerospike L2 %s/%s: %s failed: %r", self.ns, self.set, op, exc)

    async def _each(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """`fn(item)` for every item on the pool: results or exceptions, in order (awaited if cancelled)."""
        loop = asyncio.get_running_loop()
        gathered = asyncio.gather(
            *(loop.run_in_executor(self._pool, fn, i) for i in items), return_exceptions=True
        )
        try:
            return list(await asyncio.shield(gathered))
        except asyncio.CancelledError:
            await gathered
            raise

    # -- blocking record I/O (pool threads) -------------------------------------------------------------
    def _put(self, item: tuple[str, bytes]) -> bool:
        name, blob = item
        parts = [blob[i : i + self.segment] for i in range(0, max(len(blob), 1), self.segment)]
        meta = {"ttl": self.ttl} if self.ttl else None
        for i in range(len(parts) - 1, -1, -1):  # the first record, which makes the object visible, last
            bins: dict[str, Any] = {"v": bytearray(parts[i])}
            if i == 0:
                bins.update(n=len(parts), k=name)
            self.client.put(self._key(name, i), bins, meta, self._write)
        return True

    def _exists(self, name: str) -> bool:
        try:
            _, meta = self.client.exists(self._key(name, 0), self._read)
        except self.errors.RecordNotFound:
            return False
        return meta is not None

    def _get(self, name: str) -> bytes | None:
        try:
            _, _, first = self.client.get(self._key(name, 0), self._read)
            rest = [
                self.client.get(self._key(name, i), self._read)[2]["v"] for i in range(1, int(first["n"]))
            ]
        except self.errors.RecordNotFound:
            return None
        return b"".join([bytes(first["v"]), *map(bytes, rest)])

    def _remove(self, name: str) -> bool:
        try:
            _, _, first = self.client.get(self._key(name, 0), self._read)
        except self.errors.RecordNotFound:
            return False
        self.client.remove(self._key(name, 0))  # first: the object is gone for readers at once
        for i in range(1, int(first["n"])):
            try:
                self.client.remove(self._key(name, i))
            except self.errors.RecordNotFound:
                continue
        return True

    def _sizes(self) -> list[tuple[str, int]]:
        query = self.client.query(self.ns, self.set)
        query.select("k", "n", "v")
        out = []
        for _, _, bins in query.results():
            if bins and "k" in bins:
                out.append((str(bins["k"]), len(bins["v"]) + (int(bins["n"]) - 1) * self.segment))
        return out

    # -- port ------------------------------------------------------------------------------------------
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Put each object's records (first record last)."""
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            blobs = encode_all(keys, buffers)  # copied now: the caller's views are not kept
            results = await self._each(
                self._put, [(key_name(k), b) for k, b in zip(keys, blobs, strict=True)]
            )
            out = []
            for result in results:
                if isinstance(result, BaseException):
                    self._error("store", result)
                out.append(result is True)
            return record_stores(self.counters, keys, out, None if self.persist else self._stored)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """exists() of each first record; pin the hits."""
        results = await self._each(self._exists, [key_name(k) for k in keys])
        present = []
        for result in results:
            if isinstance(result, BaseException):
                self._error("lookup", result)
            present.append(result is True)
        return self._locks.lock(keys, present)

    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """Get every record of each object, verify, copy into the buffers; damage is deleted."""
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            results = await self._each(self._get, [key_name(k) for k in keys])
            blobs: list[bytes | None] = []
            for result in results:
                if isinstance(result, BaseException):
                    self._error("load", result)
                    result = None
                blobs.append(result)
            outcomes = decode_all(keys, blobs, buffers, exact)
            await quarantine_remote(
                self.delete, self.counters, damaged_keys(keys, outcomes), logger, "aerospike"
            )
            return outcomes

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Remove each object's records (at once)."""
        results = await self._each(self._remove, [key_name(k) for k in keys])
        out = []
        for result in results:
            if isinstance(result, BaseException):
                self._error("delete", result)
            out.append(result is True)
        self._stored.difference_update(keys)
        return out

    async def _listing(self) -> list[tuple[str, int]]:
        return list(await asyncio.get_running_loop().run_in_executor(self._pool, self._sizes))

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """A primary-index query of the set (first records), ordered by name."""
        try:
            names = sorted(name for name, _ in await self._listing())
        except Exception as exc:
            self._error("list", exc)
            return KeyPage((), None)
        page, nxt = page_of(names, cursor, limit)
        return KeyPage(tuple(parse_key_name(n) for n in page), nxt)

    async def usage(self) -> L2Usage:
        """Object sizes from the same query (approximate: middle segments counted as full)."""
        try:
            pairs = [(parse_key_name(n), size) for n, size in await self._listing()]
        except Exception as exc:
            self._error("usage", exc)
            pairs = []
        used, count, by_salt = usage_by_salt(pairs)
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    async def close(self) -> None:
        """Finish requests, delete this run's objects unless `persist_enabled`, close the client."""
        if self._closed:
            return
        await self._inflight.drain()
        if self._stored:
            await self.delete(list(self._stored))
        self._pool.shutdown(wait=True)
        self.client.close()
        self._closed = True
