"""Real `lmcache server` processes (benchmarks/server_process.py) and helpers to drive them like an engine."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import pytest
import torch
from benchmarks.server_process import READY, ServerProcess, free_port, free_ports

from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo

if TYPE_CHECKING:
    from collections.abc import Iterator

# the launcher's names that tests import from here
__all__ = (
    "READY",
    "Engine",
    "RunningServer",
    "free_port",
    "free_ports",
    "hit_chunks",
    "key",
    "run_server",
    "tokens_for",
)

# A small engine: 2 layers of [2, NB=64, BS=16, NH=2, HS=64] fp16 -> 1 KiB per token, 256 KiB per chunk.
SHAPE = (2, 64, 16, 2, 64)
LAYERS = 2
CHUNK_BYTES = 256 * 2 * LAYERS * 2 * 64 * 2


class RunningServer(ServerProcess):
    """A server subprocess (the shared launcher) that hands out engine clients."""

    def client(self, timeout_s: float = 10.0) -> LMCacheClient:
        """A new client of this server."""
        return LMCacheClient(self.url, timeout_s)


@contextlib.contextmanager
def run_server(*flags: str, l1_gb: str = "0.05") -> Iterator[RunningServer]:
    """Start a server with `flags` on free loopback ports; stop it (SIGTERM) afterwards, check it exited 0.

    The HTTP frontend and the Prometheus endpoint get free loopback ports too, unless `flags` name them
    (later flags win); `RunningServer.http_url` is the frontend's URL.
    """
    server = RunningServer(*flags, l1_gb=l1_gb)
    try:
        server.start(timeout_s=60)
        yield server
    finally:
        status = server.stop()
    assert status == 0, server.log()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A default server (`auto` transfer mode, SHM pool)."""
    with run_server() as running:
        yield running


class Engine:
    """A fake CPU engine: KV layers in SHM segments, registered with one client."""

    def __init__(
        self, client: LMCacheClient, instance_id: int = 1000, seed: int = 0, model: str = "m"
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.client = client
        self.instance_id = instance_id
        self.model = model
        self.layers = [SharedKVTensor(torch.randn(SHAPE, generator=gen).half()) for _ in range(LAYERS)]

    def register(self) -> None:
        groups = [EngineGroupInfo(0, tuple(range(LAYERS)), 16)]
        descriptors = [t.descriptor for t in self.layers]
        self.client.register_kv_cache(
            self.instance_id, descriptors, self.model, 1, "vllm", {"kv_layout": "NHD"}, groups
        )

    def blocks(self, block_ids: list[int]) -> list[torch.Tensor]:
        """Copies of the given blocks of every layer."""
        index = torch.tensor(block_ids)
        return [t.tensor[:, index].clone() for t in self.layers]

    def zero(self, block_ids: list[int]) -> None:
        index = torch.tensor(block_ids)
        for t in self.layers:
            t.tensor[:, index] = 0

    def close(self) -> None:
        for t in self.layers:
            t.close()


def key(
    tokens: list[int],
    rid: str,
    worker: int | None = 0,
    start: int = 0,
    end: int | None = None,
    salt: str = "",
) -> CacheKey:
    """A request key as the vLLM adapters send it (one reader per object)."""
    return CacheKey("m", 1, worker, tokens, start, len(tokens) if end is None else end, rid, salt, None, 1)


def tokens_for(seq: int, n: int = 512) -> list[int]:
    """The bench's token pattern: [seq] + [9906] * n."""
    return [seq] + [9906] * n


def hit_chunks(client: LMCacheClient, tokens: list[int], rid: str, salt: str = "") -> int:
    """Lookup + poll, as the scheduler does; returns the hit in chunks."""
    client.lookup(key(tokens, rid, worker=None, end=len(tokens) // 256 * 256, salt=salt))
    for _ in range(100):
        hit = client.query_prefetch_status(rid)
        if hit is not None:
            return hit
        time.sleep(0.01)
    raise AssertionError("prefetch never finished")
