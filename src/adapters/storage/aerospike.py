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

import functools
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_state import empty_page, page_of, tracked
from lmcache.adapters.storage._blocking import run_jobs, run_on
from lmcache.adapters.storage._load_outcomes import Outcome, decode_all, encode_all
from lmcache.adapters.storage._remote_tier import RemoteTier
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import key_name, parse_key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

__all__ = ("AerospikeL2Adapter", "parse_hosts")

_RECORD_OVERHEAD = 4096
_DEFAULT_RECORD = 1 << 20


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]` (port 3000 when omitted) as the client's host list."""
    out = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host, int(port)) if host else (item.strip(), 3000))
    return out


class AerospikeL2Adapter(RemoteTier):
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
        self._init_tier(f"{namespace}/{set_name}", max_capacity_gb, persist_enabled)
        self._read = {"total_timeout": read_timeout_ms}
        self._write = {"total_timeout": write_timeout_ms}
        config = {"hosts": parse_hosts(hosts), "policies": {"read": self._read, "write": self._write}}
        try:
            client = self.aero.client(config)
            self.client = client.connect(username, password) if username else client.connect()
        except self.errors.AerospikeError as exc:
            raise L2ConfigError(f"aerospike: cannot connect to {hosts}: {exc}") from exc
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-aerospike-l2")

    def _key(self, name: str, part: int) -> tuple[str, str, str]:
        return (self.ns, self.set, f"{name}#{part}")

    async def _each(self, op: str, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`fn(item)` for every item on the pool, in order; one that raised is None (counted, logged)."""
        jobs: list[Callable[[], Any]] = [functools.partial(fn, item) for item in items]
        results = await run_jobs(self._pool, jobs, threading.Event())
        for result in results:
            if isinstance(result, BaseException):
                self._error(op, result)
        return [None if isinstance(result, BaseException) else result for result in results]

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
    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Put each object's records (first record last)."""
        blobs = encode_all(keys, buffers)  # copied now: the caller's views are not kept
        items = [(key_name(k), b) for k, b in zip(keys, blobs, strict=True)]
        results = await self._each("store", self._put, items)
        return self._stores_done(keys, [result is True for result in results])

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """exists() of each first record; pin the hits."""
        results = await self._each("lookup", self._exists, [key_name(k) for k in keys])
        return self._locks.lock(keys, [result is True for result in results])

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """Get every record of each object, verify, copy into the buffers; damage is deleted."""
        blobs = await self._each("load", self._get, [key_name(k) for k in keys])
        return await self._quarantine(keys, decode_all(keys, blobs, buffers, exact))

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Remove each object's records (at once)."""
        results = await self._each("delete", self._remove, [key_name(k) for k in keys])
        self._stored.difference_update(keys)
        return [result is True for result in results]

    async def _listing(self) -> list[tuple[str, int]]:
        return await run_on(self._pool, self._sizes)

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """A primary-index query of the set (first records), ordered by name."""
        try:
            names = sorted(name for name, _ in await self._listing())
        except Exception as exc:
            self._error("list", exc)
            return empty_page()
        page, nxt = page_of(names, cursor, limit)
        return KeyPage(tuple(parse_key_name(n) for n in page), nxt)

    async def usage(self) -> L2Usage:
        """Object sizes from the same query (approximate: middle segments counted as full)."""
        try:
            pairs = [(parse_key_name(n), size) for n, size in await self._listing()]
        except Exception as exc:
            self._error("usage", exc)
            pairs = []
        return self._usage_of(pairs)

    async def _release(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
