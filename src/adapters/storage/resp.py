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

Redis Cluster (and Valkey cluster mode) is detected at first use (`INFO cluster`, or forced with
`"cluster": true|false`): commands then go through `redis.asyncio.cluster`, and the copy-free store and
load paths are split by the node owning each key's slot (_resp_cluster.py). Listing pages through the
primaries one after another; the cursor then is `<node index>:<scan cursor>:<skip>`.
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

from lmcache.adapters.storage._adapter_state import empty_page, tracked
from lmcache.adapters.storage._load_outcomes import Outcome, encode_headers
from lmcache.adapters.storage._remote_tier import RemoteTier, parse_names
from lmcache.adapters.storage._resp_cluster import ClusterRouter, Shard
from lmcache.adapters.storage._resp_reader import BlockingGetPool, LoadCancel
from lmcache.adapters.storage.object_format import UnusableObjectError, key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

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


class RedisL2Adapter(RemoteTier):
    """Redis/Valkey L2 tier; see the module docstring."""

    kind = "resp"

    def __init__(
        self,
        host: str,
        port: int,
        num_workers: int = 8,
        username: str = "",
        password: str = "",
        max_capacity_gb: float = 0.0,
        cluster: bool | None = None,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.url = _url(host, port)
        self._auth = (username or None, password or None, num_workers)
        self._cluster_wanted = cluster
        self.router: ClusterRouter | None = None
        self._init_tier(self.url.split("?")[0], max_capacity_gb, persist_enabled)
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
        self._standalone = Shard(self.url, self.client, self._getter)

    async def _router(self) -> ClusterRouter | None:
        """The cluster router when the server is a cluster node (decided at the first reachable call)."""
        if self.router is not None or self._cluster_wanted is False:
            return self.router
        if self._cluster_wanted is None:
            info = await self.client.info("cluster")
            self._cluster_wanted = bool(info.get("cluster_enabled"))
            if not self._cluster_wanted:
                return None
        username, password, workers = self._auth
        router = ClusterRouter(self.url, username, password, workers, _SOCKET_TIMEOUT_S)
        await router.start()
        self.router = router
        logger.info(
            "resp L2 %s: Redis Cluster with %d primaries", self.url.split("?")[0], len(router.primaries())
        )
        return router

    def _direct(self) -> Any:
        """A client that routes any key to its node (the cluster client in cluster mode)."""
        return self.router.cluster if self.router is not None else self.client

    async def _groups(self, names: Sequence[bytes]) -> list[tuple[Shard, list[int]]]:
        router = await self._router()
        if router is None:
            return [(self._standalone, list(range(len(names))))]
        return router.groups(names)

    async def _shards(self) -> list[Shard]:
        router = await self._router()
        return [self._standalone] if router is None else router.primaries()

    async def _moved(self, exc: BaseException) -> None:
        if self.router is not None and "MOVED" in str(exc):
            await self.router.refresh()

    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """One SET per object, pipelined on one connection; each value is sent as header then payload."""
        headers = encode_headers(keys, buffers)  # xxh3: ~0.04 ms per MiB, cheaper than a thread hop
        names = [(PREFIX + key_name(key)).encode() for key in keys]
        out = [False] * len(keys)
        try:
            groups = await self._groups(names)
            done = await asyncio.gather(
                *(
                    self._set_all(
                        shard.client,
                        [names[i] for i in idx],
                        [headers[i] for i in idx],
                        [buffers[i] for i in idx],
                    )
                    for shard, idx in groups
                ),
                return_exceptions=True,
            )
            for (_, idx), result in zip(groups, done, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, _ERRORS):
                        raise result
                    self._error("store", result)
                    await self._moved(result)
                    continue
                for i, ok in zip(idx, result, strict=True):
                    out[i] = ok
        except _ERRORS as exc:
            self._error("store", exc)
        return self._stores_done(keys, out)

    @staticmethod
    async def _set_all(
        client: aioredis.Redis,
        names: Sequence[bytes],
        headers: Sequence[bytes],
        payloads: Sequence[memoryview],
    ) -> list[bool]:
        """Pipelined SETs written as RESP by hand, one connection for the batch.

        A bulk string need not be one buffer, so the header and the L1 payload go to the socket as they
        are (redis-py would need them joined into one value first, a copy of every object). One SET per
        object keeps each object visible whole or not at all.
        """
        frames: list[bytes | memoryview] = []
        for name, header, payload in zip(names, headers, payloads, strict=True):
            size = len(header) + payload.nbytes
            frames += [b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(name), name, size), header, payload]
            frames.append(b"\r\n")
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(frames)
            replies = [await conn.read_response() for _ in names]
        except BaseException:
            await conn.disconnect()  # replies may be left unread on it
            raise
        finally:
            await pool.release(conn)
        return [reply in (b"OK", "OK", True) for reply in replies]

    async def _per_key(self, op: str, command: str, keys: Sequence[ObjectKey]) -> list[bool] | None:
        """`command` on every key's name in one pipeline: whether each replied 1.

        None (logged, counted) when the backend failed.
        """
        if not keys:
            return []
        try:
            router = await self._router()
            pipe: Any = (router.cluster if router else self.client).pipeline(transaction=False)
            for key in keys:
                getattr(pipe, command)(PREFIX + key_name(key))
            return [reply == 1 for reply in await pipe.execute()]
        except _ERRORS as exc:
            self._error(op, exc)
            return None

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """EXISTS per key in one pipeline; pin the hits."""
        present = await self._per_key("lookup", "exists", keys)
        return self._locks.lock(keys, [False] * len(keys) if present is None else present)

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """GET every object in one pipeline on a load thread, each payload received into its buffer."""
        names = [(PREFIX + key_name(key)).encode() for key in keys]
        try:
            groups = await self._groups(names)
        except _ERRORS as exc:
            self._error("load", exc)
            return [False] * len(keys)
        done = await asyncio.gather(
            *(
                self._load_on(shard, [names[i] for i in idx], keys, buffers, idx, exact)
                for shard, idx in groups
            )
        )
        outcomes: list[Outcome] = [False] * len(keys)
        for (_, idx), result in zip(groups, done, strict=True):
            for i, outcome in zip(idx, result, strict=True):
                outcomes[i] = outcome
        moved = [o for o in outcomes if isinstance(o, UnusableObjectError) and "MOVED" in str(o)]
        if moved:
            await self._moved(moved[0])
        return await self._quarantine(keys, outcomes)

    async def _load_on(
        self,
        shard: Shard,
        names: list[bytes],
        keys: Sequence[ObjectKey],
        buffers: Sequence[memoryview],
        idx: list[int],
        exact: bool,
    ) -> list[Outcome]:
        """One node's GETs on a load thread; a failed connection is all-miss (counted)."""
        cancel = LoadCancel()
        job = functools.partial(
            shard.getter.load, names, [keys[i] for i in idx], [buffers[i] for i in idx], cancel, exact
        )
        thread = asyncio.get_running_loop().run_in_executor(self._load_threads, job)
        try:
            return list(await asyncio.shield(thread))
        except asyncio.CancelledError:
            # A deadline: unblock the thread, and return only once it stopped writing into buffers.
            cancel.cancel()
            await asyncio.gather(thread, return_exceptions=True)
            raise
        except _ERRORS as exc:
            self._error("load", exc)
            return [False] * len(idx)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """DEL per key in one pipeline (at once, pins do not defer it)."""
        removed = await self._per_key("delete", "delete", keys)
        if removed is None:
            return [False] * len(keys)
        self._stored.difference_update(keys)
        return removed

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """SCAN pages under the prefix, node after node. The cursor is `<node>:<scan cursor>:<skip>`.

        SCAN may return more keys in one step than `limit`; the rest are returned next time by repeating
        the step and skipping what was handed out. Keys written during a listing may be missed.
        """
        parts = [int(p) for p in (cursor or "0:0:0").split(":")]
        node, scan_cursor, skip = parts if len(parts) == 3 else [0, *parts]
        names: list[str] = []
        try:
            shards = await self._shards()
            while node < len(shards):
                resume = await self._scan_node(shards[node].client, scan_cursor, skip, limit, names)
                if resume is not None:
                    return KeyPage(_parse(names), f"{node}:{resume[0]}:{resume[1]}")
                node, scan_cursor, skip = node + 1, 0, 0
                if len(names) >= limit and node < len(shards):
                    return KeyPage(_parse(names), f"{node}:0:0")
            return KeyPage(_parse(names), None)
        except _ERRORS as exc:
            self._error("list", exc)
            return empty_page()

    @staticmethod
    async def _scan_node(
        client: aioredis.Redis, scan_cursor: int, skip: int, limit: int, names: list[str]
    ) -> tuple[int, int] | None:
        """Append one node's names until `limit`; returns where to resume there, None when it is done."""
        while True:
            nxt, batch = await client.scan(scan_cursor, match=PREFIX + "*", count=max(limit, 10))
            batch = batch[skip:]
            room = limit - len(names)
            if len(batch) > room:
                names += [_text(b) for b in batch[:room]]
                return scan_cursor, skip + room
            names += [_text(b) for b in batch]
            scan_cursor, skip = int(nxt), 0
            if scan_cursor == 0:
                return None
            if len(names) == limit:
                return scan_cursor, 0

    async def usage(self) -> L2Usage:
        """Sum of value sizes under the prefix (SCAN pages, one pipelined STRLEN per page, every node)."""
        sizes: list[tuple[ObjectKey, int]] = []
        try:
            for shard in await self._shards():
                scan_cursor = -1
                while scan_cursor != 0:
                    step = max(scan_cursor, 0)
                    scan_cursor, batch = await shard.client.scan(step, match=PREFIX + "*", count=1000)
                    pipe = shard.client.pipeline(transaction=False)
                    for raw in batch:
                        pipe.strlen(raw)
                    lengths = await pipe.execute() if batch else []
                    for raw, length in zip(batch, lengths, strict=True):
                        sizes += [(key, int(length)) for key in _parse([_text(raw)])]
        except _ERRORS as exc:
            self._error("usage", exc)
        return self._usage_of(sizes)

    async def _release(self) -> None:
        await self.client.aclose()
        if self.router is not None:
            await self.router.close()
        self._load_threads.shutdown(wait=True)
        self._getter.close()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _parse(names: list[str]) -> tuple[ObjectKey, ...]:
    return tuple(parse_names(name.removeprefix(PREFIX) for name in names))
