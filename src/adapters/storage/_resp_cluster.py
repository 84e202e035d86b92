"""Redis Cluster routing for the resp adapter: which node holds each key, and one client pair per node.

`redis.asyncio.cluster.RedisCluster` keeps the slot map (it follows MOVED/ASK for the commands it sends:
EXISTS, DEL, the pipelines). The copy-free paths of resp.py (hand-written SET pipelines, GET replies
received straight into L1) talk to one node at a time, so they group keys by the node that owns their
slot and use a plain client and a BlockingGetPool per node, built lazily from the adapter's URL (same
scheme, credentials and options). A node that answers MOVED (resharding, failover) makes the router
reload the slot map; the keys it refused were misses or failed stores, counted like any backend error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from lmcache.adapters.storage._resp_reader import BlockingGetPool

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("ClusterRouter", "Shard", "node_url")

logger = logging.getLogger(__name__)


def node_url(url: str, host: str, port: int) -> str:
    """The adapter's URL pointed at another node (scheme, credentials and query options kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Shard:
    """The clients of one node: asyncio for stores and listings, blocking for loads."""

    name: str
    client: aioredis.Redis
    getter: BlockingGetPool


class ClusterRouter:
    """Slot map and per-node clients of one cluster.

    Args:
        url: The adapter's `redis://` / `rediss://` URL (any node of the cluster).
        username: ACL user, or None.
        password: Password, or None.
        connections: Connections per node and pool (`num_workers`).
        timeout_s: Connect and socket timeout.
    """

    def __init__(
        self, url: str, username: str | None, password: str | None, connections: int, timeout_s: float
    ) -> None:
        self.url = url
        self._auth = (username, password)
        self._connections = connections
        self._timeout_s = timeout_s
        self.cluster: RedisCluster = RedisCluster.from_url(
            url,
            username=username,
            password=password,
            max_connections=connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self._shards: dict[str, Shard] = {}

    async def start(self) -> None:
        """Load the slot map."""
        await self.cluster.initialize()

    async def refresh(self) -> None:
        """Reload the slot map after a node refused a key (MOVED)."""
        logger.info("resp L2: reloading the Redis Cluster slot map")
        await self.cluster.nodes_manager.initialize()

    def shard(self, host: str, port: int) -> Shard:
        """The clients of node `host:port` (created on first use)."""
        name = f"{host}:{port}"
        shard = self._shards.get(name)
        if shard is None:
            url = node_url(self.url, host, int(port))
            username, password = self._auth
            client = aioredis.from_url(
                url,
                username=username,
                password=password,
                max_connections=self._connections,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
            )
            getter = BlockingGetPool(url, username, password, self._connections, self._timeout_s)
            shard = self._shards[name] = Shard(name, client, getter)
        return shard

    def groups(self, names: Sequence[bytes]) -> list[tuple[Shard, list[int]]]:
        """Key indices grouped by the primary that owns their slot."""
        by_node: dict[str, tuple[Shard, list[int]]] = {}
        for i, name in enumerate(names):
            node = self.cluster.get_node_from_key(name)  # type: ignore[arg-type]
            if node is None:
                raise aioredis.ConnectionError(f"no cluster node owns the slot of {name[:80]!r}")
            shard = self.shard(node.host, int(node.port))
            by_node.setdefault(shard.name, (shard, []))[1].append(i)
        return list(by_node.values())

    def primaries(self) -> list[Shard]:
        """Every primary, in a stable order (listings page through them one after another)."""
        nodes = sorted(self.cluster.get_primaries(), key=lambda n: (n.host, int(n.port)))
        return [self.shard(n.host, int(n.port)) for n in nodes]

    async def close(self) -> None:
        """Close every client."""
        for shard in self._shards.values():
            await shard.client.aclose()
            shard.getter.close()
        self._shards.clear()
        await self.cluster.aclose()
