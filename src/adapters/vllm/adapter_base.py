"""What the scheduler's and the worker's adapters share: the client, the chunk-size handshake, the strategy.

Both connect to one server the same way (a client with `mq_timeout`, then `get_chunk_size`, which must be a
multiple of vLLM's block size) and answer vLLM's questions about the parallel layout and the server's
health the same way; each adds its own heartbeat (`self.heartbeat`) and wire calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import CacheKey
from lmcache.adapters.vllm.transfer_ops import ParallelStrategy

if TYPE_CHECKING:
    from lmcache.adapters.vllm.heartbeat import Heartbeat

__all__ = ("AdapterBase", "connect_chunk_size")


def connect_chunk_size(client: LMCacheClient, timeout_s: float, block_size: int) -> int:
    """Ask the server's chunk size; ConnectionError when it does not answer, ValueError when unusable."""
    try:
        chunk_size = int(client.call("get_chunk_size", timeout_s=timeout_s))
    except TimeoutError:
        raise ConnectionError(
            f"LMCache server at {client.url} did not answer get_chunk_size within {timeout_s:g}s "
            "(lmcache.mp.mq_timeout). Is `lmcache server` running on that host and port?"
        ) from None
    if chunk_size <= 0 or chunk_size % block_size:
        raise ValueError(
            f"LMCache chunk size {chunk_size} is not a multiple of vLLM's block size {block_size}; "
            "start the server with a --chunk-size that is"
        )
    return chunk_size


class AdapterBase:
    """A connected adapter: `client`, `chunk_size`, `parallel_strategy` (subclasses set `heartbeat`).

    Raises (from the constructor): ConnectionError when the server does not answer within `mq_timeout`,
    ValueError when its chunk size is not a multiple of `vllm_block_size`.
    """

    heartbeat: Heartbeat

    def __init__(
        self,
        server_url: str,
        model_name: str,
        vllm_block_size: int,
        parallel_strategy: ParallelStrategy | None,
        mq_timeout: float,
        client: LMCacheClient | None,
    ) -> None:
        self.client = client or LMCacheClient(server_url, timeout_s=mq_timeout)
        self.model_name = model_name
        self.block_size = vllm_block_size
        self.parallel_strategy = parallel_strategy or ParallelStrategy.build(False, 1, 0, 1, 1)
        self.mq_timeout = mq_timeout
        self.chunk_size = connect_chunk_size(self.client, mq_timeout, vllm_block_size)

    @property
    def world_size(self) -> int:
        """The KV world size of our keys."""
        return self.parallel_strategy.kv_world_size

    @property
    def is_healthy(self) -> bool:
        """The heartbeat's view of the server."""
        return self.heartbeat.healthy

    def _cache_key(
        self,
        worker_id: int | None,
        token_ids: list[int],
        start: int,
        end: int,
        request_id: str,
        cache_salt: str,
        request_configs: dict[str, Any] | None,
    ) -> CacheKey:
        """A key of our model, KV world size and reader count (`worker_id` None: a lookup, every rank).

        Built one way on both sides, so the scheduler's lookups and the worker's stores and loads name the
        same chunks.
        """
        return CacheKey(
            self.model_name,
            self.world_size,
            worker_id,
            token_ids,
            start,
            end,
            request_id,
            cache_salt,
            request_configs,
            self.parallel_strategy.num_kv_readers,
        )

    def num_blocks_per_chunk(self) -> int:
        """Blocks of vLLM per chunk."""
        return self.chunk_size // self.block_size
