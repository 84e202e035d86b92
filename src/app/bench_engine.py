"""The simulated engine of `lmcache bench server`: KV layers in SHM, registered, stored and retrieved.

Locks (wire-protocol.md §5): a lookup read-locks the chunks it found until a retrieve consumes them. Every
`retrieve` here gives them back on every path: lmcache-driven, the server releases them inside `retrieve`
whether the copy succeeded or not; engine-driven, `prepare_retrieve` releases them when it fails, and a
successful pool retrieve is always followed by `commit_retrieve`, even when the copy out of the pool raised.
Whoever never reaches `retrieve` frees the lookup's locks itself (`free_lookup_locks`, bench.py).
"""

from __future__ import annotations

import mmap
import os
import re
from typing import TYPE_CHECKING, Any

import torch

from lmcache.adapters.transfer.checksums import block_checksums
from lmcache.adapters.transfer.chunk_codec import decode_chunks, encode_raw
from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer, torch_dtype
from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.wire_types import (
    CacheKey,
    EngineGroupInfo,
    RegisterEngineDrivenContextPayload,
)
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import TensorSpec, build_layout

if TYPE_CHECKING:
    from lmcache.adapters.transport.client import LMCacheClient

__all__ = ("INSTANCE_ID", "MODEL", "BenchEngine", "bench_key", "parse_spec")

_SPEC = re.compile(r"^\((\d+(?:,\d+)*)\):(\w+):(\d+)$")
INSTANCE_ID = 1000
MODEL = "test-model"


def parse_spec(spec: str) -> tuple[tuple[int, ...], torch.dtype, int]:
    """`(2,NB,BS,NH,HS):dtype:layers` -> (shape, dtype, layers); exits 2 naming the flag when malformed."""
    match = _SPEC.match(spec.replace(" ", ""))
    if not match:
        raise SystemExit(f"lmcache bench server: error: --kvcache-shape-spec: cannot parse {spec!r}")
    shape = tuple(int(x) for x in match.group(1).split(","))
    if len(shape) != 5 or shape[0] != 2:
        raise SystemExit("lmcache bench server: error: --kvcache-shape-spec: expected (2,NB,BS,NH,HS)")
    return shape, torch_dtype(match.group(2)), int(match.group(3))


def bench_key(tokens: list[int], rid: str, worker: int | None, end: int) -> CacheKey:
    """The request key of one bench request (worker None: the scheduler's lookup)."""
    return CacheKey(MODEL, 1, worker, tokens, 0, end, rid, "", None, 1)


class BenchEngine:
    """Simulated KV layers (random, fixed seed) in SHM, and the engine's half of store and retrieve.

    Args:
        client: The connection to the server.
        shape: One layer's `(2, NB, BS, NH, HS)`.
        dtype: The KV dtype.
        layers: How many layers.
        chunk: The server's chunk size in tokens.
        mode: `lmcache_driven` (the server copies from the SHM layers) or `engine_driven` (we copy).
    """

    def __init__(
        self,
        client: LMCacheClient,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        layers: int,
        chunk: int,
        mode: str,
    ) -> None:
        gen = torch.Generator().manual_seed(42)
        self.client, self.mode = client, mode
        self.shape, self.block_size, self.chunk = shape, shape[2], chunk
        self.layers = [
            SharedKVTensor((torch.rand(shape, generator=gen) * 2 - 1).to(dtype)) for _ in range(layers)
        ]
        specs = [
            TensorSpec(str(dtype).removeprefix("torch."), shape, tuple(t.tensor.stride()), 0)
            for t in self.layers
        ]
        self.layout = build_layout(specs, {"kv_layout": "NHD"}, [], chunk)
        self.pool: torch.Tensor | None = None
        self._mmap: mmap.mmap | None = None

    # ------------------------------------------------------------ the blocks
    def zero(self, blocks: list[int]) -> None:
        """Zero these blocks of every layer (so a retrieve must write them back)."""
        index = torch.tensor(blocks)
        for t in self.layers:
            t.tensor.index_fill_(1, index, 0)

    def checksums(self, blocks: list[int]) -> list[str]:
        """Per-chunk digests of these blocks, as the server's `/cache/checksums` computes them."""
        return block_checksums([t.tensor for t in self.layers], blocks, self.chunk // self.block_size)

    def close(self) -> None:
        """Unmap the engine-driven pool and unlink our SHM layers."""
        self.pool = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        for t in self.layers:
            t.close()

    # -------------------------------------------------------- registration
    def register(self) -> None:
        """Register as instance `INSTANCE_ID` in our mode (engine-driven: map the server's pool)."""
        if self.mode == "lmcache_driven":
            groups = [EngineGroupInfo(0, tuple(range(len(self.layers))), self.block_size)]
            descriptors: list[Any] = [t.descriptor for t in self.layers]
            self.client.register_kv_cache(
                INSTANCE_ID, descriptors, MODEL, 1, "vllm", {"kv_layout": "NHD"}, groups
            )
            return
        _, bs, nh, hs = self.shape[1:]
        dtype = str(self.layers[0].tensor.dtype).removeprefix("torch.")
        payload = RegisterEngineDrivenContextPayload(
            INSTANCE_ID, MODEL, 1, bs, len(self.layers), nh * hs, dtype, False, self.chunk
        )
        reply = self.client.register_engine_driven(payload)
        if reply.shm_name:
            fd = os.open(f"/dev/shm/{reply.shm_name}", os.O_RDWR)
            try:
                self._mmap = mmap.mmap(fd, reply.pool_size)
            finally:
                os.close(fd)
            self.pool = torch.frombuffer(self._mmap, dtype=torch.uint8)

    def unregister(self) -> None:
        """Unregister; the server then aborts our pending writes and releases pending pool reads."""
        if self.mode == "lmcache_driven":
            self.client.unregister_kv_cache(INSTANCE_ID)
        else:
            self.client.unregister_engine_driven(INSTANCE_ID)

    # ------------------------------------------------------- store/retrieve
    def store(self, tokens: list[int], rid: str, blocks: list[int], end: int) -> bool:
        """Store the request's full chunks from `blocks`; True when the server committed them."""
        key = bench_key(tokens, rid, 0, end)
        if self.mode == "lmcache_driven":
            return self.client.store(key, INSTANCE_ID, [blocks], b"stub_ipc_handle")[1]
        prep = self.client.prepare_store(key, INSTANCE_ID)
        chunks = list(range(end // self.chunk))
        if self.pool is not None:
            slots = prep.context.get("slots", [])
            if not slots:
                return True  # every chunk is already stored
            extents = [Extent(s["offset"], s["length"]) for s in slots]
            try:
                self._transfer(self.pool).gather([blocks], prep.context["chunk_indices"], extents)
            finally:
                committed = self.client.commit_store(key, INSTANCE_ID)  # never leave the reservation
            return committed
        size = self.layout.object_bytes
        staging = torch.empty(len(chunks) * size, dtype=torch.uint8)
        self._transfer(staging).gather([blocks], chunks, [Extent(i * size, size) for i in chunks])
        return self.client.commit_store(key, INSTANCE_ID, encode_raw([staging.numpy().tobytes()]))

    def retrieve(self, tokens: list[int], rid: str, blocks: list[int], end: int) -> bool:
        """Copy the request's chunks into `blocks`; releases the lookup's locks whatever happens."""
        key = bench_key(tokens, rid, 0, end)
        if self.mode == "lmcache_driven":
            return self.client.retrieve(key, INSTANCE_ID, [blocks], b"stub_ipc_handle", 0)[1]
        reply = self.client.prepare_retrieve(key, INSTANCE_ID)
        if not reply.success:
            return False
        chunks = list(range(end // self.chunk))
        if self.pool is not None:
            extents = [Extent(s["offset"], s["length"]) for s in reply.context["slots"]]
            try:
                self._transfer(self.pool).scatter([blocks], chunks, extents)
            finally:
                released = self.client.commit_retrieve(key, INSTANCE_ID)
            return released
        size = self.layout.object_bytes
        views = decode_chunks(reply.data, size)
        staging = torch.frombuffer(bytearray(b"".join(views)), dtype=torch.uint8)
        self._transfer(staging).scatter([blocks], chunks, [Extent(i * size, size) for i in chunks])
        return self.client.commit_retrieve(key, INSTANCE_ID)

    def _transfer(self, arena: torch.Tensor) -> CpuKVTransfer:
        return CpuKVTransfer(self.layout, [t.tensor for t in self.layers], arena)
