"""resp: Redis or Valkey through `redis.asyncio`, one pipeline per batch, a pool of `num_workers` connections.

Each object is one string value (header + payload, object_format.py) under `lmcache:<key_name>`, written
with one SET whose value is written to the socket as header then payload (RESP by hand, no joined copy
of the object), so it is visible whole or not at all. `host` is a host name or a `redis://` /
`rediss://` URL (TLS); URL query options pass through to redis-py (`?ssl_ca_certs=/path/ca.pem`,
`?ssl_cert_reqs=none`), and `port` fills in a URL without one. Listing is SCAN over the prefix; usage
is a SCAN + STRLEN pass (approximate under concurrent writers). Backend errors are misses, logged and
counted in `counters.backend_errors` (which trips the circuit breaker, resilience.py). Loads leave the
asyncio client: `num_workers` threads with redis-py's synchronous connections receive each value straight
into its L1 buffer (_resp_reader.py says why).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lmcache.adapters.storage._common import (
    AdapterCounters,
    InFlight,
    LockTable,
    Outcome,
    damaged_keys,
    encode_headers,
    quarantine_remote,
    sizes_of,
    tally_loads,
    usage_by_salt,
)
from lmcache.adapters.storage._resp_reader import BlockingGetPool, LoadCancel
from lmcache.adapters.storage.object_format import key_name
from lmcache.adapters.storage.object_format import parse_key_name as _parse_name
from lmcache.domain.units import gb_to_bytes
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("RedisL2Adapter",)

logger = logging.getLogger(__name__)
PREFIX = "lmcache:"
_ERRORS = (RedisError, OSError)
_SOCKET_TIMEOUT_S = 10.0


def _url(host: str, port: int) -> str:
    if "://" not in host:
        return f"redis://{host}:{port}"
    parts = urlsplit(host)
    if parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    return urlunsplit(parts)


class RedisL2Adapter:
    """Redis/Valkey L2 tier; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        num_workers: int = 8,
        username: str = "",
        password: str = "",
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.url = _url(host, port)
        self.capacity_bytes = gb_to_bytes(max_capacity_gb)
        self.persist = persist_enabled
        self.counters = AdapterCounters()
        self._locks = LockTable()
        self._inflight = InFlight()
        self._stored: set[ObjectKey] = set()
        self.client: aioredis.Redis = aioredis.from_url(
            self.url,
            username=username or None,
            password=password or None,
            max_connections=num_workers,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_SOCKET_TIMEOUT_S,
        )
        self._getter = BlockingGetPool(
            self.url, username or None, password or None, num_workers, _SOCKET_TIMEOUT_S
        )
        self._load_threads = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-resp-load")

    def _error(self, op: str, exc: BaseException) -> None:
        self.counters.backend_errors += 1
        logger.warning("resp L2 %s: %s failed: %r", self.url.split("?")[0], op, exc)

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """One SET per object, pipelined on one connection; each value is sent as header then payload."""
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            headers = encode_headers(keys, buffers)  # xxh3: ~0.04 ms per MiB, cheaper than a thread hop
            try:
                out = await self._set_all(keys, headers, buffers)
            except _ERRORS as exc:
                self._error("store", exc)
                out = [False] * len(keys)
            self.counters.stores += sum(out)
            self.counters.store_failures += len(out) - sum(out)
            if not self.persist:
                self._stored.update(k for k, ok in zip(keys, out, strict=True) if ok)
            return out

    async def _set_all(
        self, keys: Sequence[ObjectKey], headers: Sequence[bytes], payloads: Sequence[memoryview]
    ) -> list[bool]:
        """Pipelined SETs written as RESP by hand, one connection for the batch.

        A bulk string need not be one buffer, so the header and the L1 payload go to the socket as they
        are (redis-py would need them joined into one value first, a copy of every object). One SET per
        object keeps each object visible whole or not at all.
        """
        frames: list[bytes | memoryview] = []
        for key, header, payload in zip(keys, headers, payloads, strict=True):
            name = (PREFIX + key_name(key)).encode()
            size = len(header) + payload.nbytes
            frames += [b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(name), name, size), header, payload]
            frames.append(b"\r\n")
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(frames)
            replies = [await conn.read_response() for _ in keys]
        except BaseException:
            await conn.disconnect()  # replies may be left unread on it
            raise
        finally:
            await pool.release(conn)
        return [reply in (b"OK", "OK", True) for reply in replies]

    async def _per_key(self, op: str, command: str, keys: Sequence[ObjectKey]) -> list[Any] | None:
        """`command` on every key's name in one pipeline; None (logged, counted) when the backend failed."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            getattr(pipe, command)(PREFIX + key_name(key))
        try:
            return list(await pipe.execute())
        except _ERRORS as exc:
            self._error(op, exc)
            return None

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """EXISTS per key in one pipeline; pin the hits."""
        if not keys:
            return []
        replies = await self._per_key("lookup", "exists", keys)
        if replies is None:
            return [False] * len(keys)
        return self._locks.lock(keys, [reply == 1 for reply in replies])

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """GET every object in one pipeline on a load thread, each payload received into its buffer."""
        return tally_loads(self.counters, keys, await self._load(keys, buffers, True), logger, "resp")

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """As `load`, each payload received at the start of a buffer at least as large; returns the sizes."""
        outcomes = await self._load(keys, buffers, False)
        tally_loads(self.counters, keys, outcomes, logger, "resp")
        return sizes_of(outcomes)

    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        if self._inflight.closing or not keys:
            return [False] * len(keys)
        async with self._inflight.track():
            names = [(PREFIX + key_name(key)).encode() for key in keys]
            cancel = LoadCancel()
            job = functools.partial(self._getter.load, names, keys, buffers, cancel, exact)
            thread = asyncio.get_running_loop().run_in_executor(self._load_threads, job)
            try:
                outcomes = await asyncio.shield(thread)
            except asyncio.CancelledError:
                # A deadline: unblock the thread, and return only once it stopped writing into buffers.
                cancel.cancel()
                await asyncio.gather(thread, return_exceptions=True)
                raise
            except _ERRORS as exc:
                self._error("load", exc)
                return [False] * len(keys)
            await quarantine_remote(self.delete, self.counters, damaged_keys(keys, outcomes), logger, "resp")
            return outcomes

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader pinned `key` (a delete from the HTTP API skips it)."""
        return self._locks.is_locked(key)

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        """Drop one pin per key."""
        self._locks.unlock(keys)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """DEL per key in one pipeline (at once, pins do not defer it)."""
        if not keys:
            return []
        replies = await self._per_key("delete", "delete", keys)
        if replies is None:
            return [False] * len(keys)
        self._stored.difference_update(keys)
        return [reply == 1 for reply in replies]

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """SCAN pages under the prefix. The cursor is `<scan cursor>:<keys of that step already returned>`.

        SCAN may return more keys in one step than `limit`; the rest are returned next time by repeating
        the step and skipping what was handed out. Keys written during a listing may be missed.
        """
        scan_cursor, skip = (int(p) for p in (cursor or "0:0").split(":"))
        names: list[str] = []
        try:
            while True:
                nxt, batch = await self.client.scan(scan_cursor, match=PREFIX + "*", count=max(limit, 10))
                batch = batch[skip:]
                room = limit - len(names)
                if len(batch) > room:
                    names += [_text(b) for b in batch[:room]]
                    return KeyPage(_parse(names), f"{scan_cursor}:{skip + room}")
                names += [_text(b) for b in batch]
                scan_cursor, skip = int(nxt), 0
                if scan_cursor == 0:
                    return KeyPage(_parse(names), None)
                if len(names) == limit:
                    return KeyPage(_parse(names), f"{scan_cursor}:0")
        except _ERRORS as exc:
            self._error("list", exc)
            return KeyPage((), None)

    async def usage(self) -> L2Usage:
        """Sum of value sizes under the prefix (SCAN pages, one pipelined STRLEN per page)."""
        sizes: list[tuple[ObjectKey, int]] = []
        scan_cursor = -1
        try:
            while scan_cursor != 0:
                step = max(scan_cursor, 0)
                scan_cursor, batch = await self.client.scan(step, match=PREFIX + "*", count=1000)
                pipe = self.client.pipeline(transaction=False)
                for raw in batch:
                    pipe.strlen(raw)
                lengths = await pipe.execute() if batch else []
                for raw, length in zip(batch, lengths, strict=True):
                    key = _parse_one(_text(raw))
                    if key is not None:
                        sizes.append((key, int(length)))
        except _ERRORS as exc:
            self._error("usage", exc)
        used, count, by_salt = usage_by_salt(sizes)
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    async def close(self) -> None:
        """Wait for stores in flight, delete this run's objects unless `persist_enabled`, drop the pool."""
        await self._inflight.drain()
        if self._stored:
            await self.delete(list(self._stored))
        await self.client.aclose()
        self._load_threads.shutdown(wait=True)
        self._getter.close()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse_one(name: str) -> ObjectKey | None:
    try:
        return _parse_name(name.removeprefix(PREFIX))
    except ValueError:
        return None


def _parse(names: list[str]) -> tuple[ObjectKey, ...]:
    return tuple(key for key in map(_parse_one, names) if key is not None)
