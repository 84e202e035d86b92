"""The data-path benchmark's engine side: the bench shape, KV layers in POSIX SHM, tokens, keys."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo

if TYPE_CHECKING:
    from lmcache.adapters.transport.client import LMCacheClient

NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE = 1024, 16, 8, 128
DTYPE = torch.float16
CHUNK = 256
MODEL = "bench-model"
INSTANCE = 4242
REQUEST_TOKENS = (512, 8192)


def request_bytes(tokens: int, layers: int) -> int:
    """Bytes one request moves: tokens x K/V x layers x heads x head size x fp16."""
    return tokens * 2 * layers * HEADS * HEAD_SIZE * DTYPE.itemsize


class Engine:
    """The engine side: per-layer KV tensors in SHM, token sequences and block ids.

    Args:
        layers: Number of layers.
        seed: RNG seed of tokens, block ids and KV values.
    """

    def __init__(self, layers: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        shape = (2, NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE)
        base = torch.randint(-(2**15), 2**15 - 1, shape, dtype=torch.int16, generator=gen)
        self.layers: list[SharedKVTensor] = []
        try:
            for i in range(layers):
                shared = SharedKVTensor(torch.empty(shape, dtype=DTYPE))
                self.layers.append(shared)
                raw = shared.tensor.view(torch.int16)
                raw.copy_(base)
                raw[:, :, 0, 0, 0] = i  # layers differ, so a swapped layer would show
        except BaseException:
            self.close()
            raise
        self._seq = 0

    def tokens(self, n: int) -> list[int]:
        """A token sequence never used before (its first token is a counter)."""
        self._seq += 1
        return [self._seq] + [self.rng.randrange(1, 1 << 17) for _ in range(n - 1)]

    def blocks(self, n_tokens: int, contiguous: bool = False) -> list[int]:
        """Distinct block ids (never the null block 0) for `n_tokens` tokens.

        Scattered, or one ascending range as an engine's allocator hands out on a fresh cache (LMCache's
        bench does the same).
        """
        count = n_tokens // BLOCK_SIZE
        if contiguous:
            first = self.rng.randrange(1, NUM_BLOCKS - count + 1)
            return list(range(first, first + count))
        return self.rng.sample(range(1, NUM_BLOCKS), count)

    def register(self, client: LMCacheClient) -> None:
        """`register_kv_cache` of all layers as one engine group."""
        group = EngineGroupInfo(0, tuple(range(len(self.layers))), BLOCK_SIZE)
        client.register_kv_cache(
            INSTANCE, [t.descriptor for t in self.layers], MODEL, 1, "vllm", {"kv_layout": "NHD"}, [group]
        )

    def close(self) -> None:
        """Unlink every segment."""
        for shared in self.layers:
            shared.close()


def key(tokens: list[int], request_id: str, worker_id: int | None, readers: int = 0) -> CacheKey:
    """A key over all of `tokens` (a whole number of chunks)."""
    return CacheKey(MODEL, 1, worker_id, tokens, 0, len(tokens), request_id, "", None, readers)
