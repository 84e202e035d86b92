"""The engine-driven ops (wire-protocol.md §5.11): the worker copies chunks in and out of the server's L1.

The connector takes this path for `lmcache.mp.mp_transfer_mode=lmcache_driven`: the spec names modes by
who drives the copy from the engine's side, the server by its ops (config.py).

Op 14 registers a context and answers the server's SHM pool (name and size); we map it read-write (never
unlink it: the server owns it). A store asks `prepare_store` for slots, gathers each listed chunk of the
range into its slot and commits; a retrieve asks `prepare_retrieve` for the chunks' slots, scatters them
into vLLM's blocks (skipping blocks vLLM's prefix cache holds) and commits to release the locks. Without a
pool the chunk bytes travel in the messages: ours as raw bytes, the server's as a pickled tensor list read
with the restricted unpickler of `chunk_codec`.

Gathers and scatters are the server's own CPU copy kernels (`CpuKVTransfer`) applied to the pool, so an
object written here holds the same bytes the server writes for the same tensor in lmcache-driven mode.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from lmcache.adapters.transfer.chunk_codec import decode_chunks, encode_raw
from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer
from lmcache.adapters.transfer.shm_segment import ShmSegment
from lmcache.adapters.transport.wire_types import CacheKey, RegisterEngineDrivenContextPayload
from lmcache.adapters.vllm.kv_tensors import tensor_spec
from lmcache.adapters.vllm.transfer_base import Outcome, RegistrationRejectedError
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import EngineGroup, KVFormat, build_layout

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.vllm.transfer_base import Waiter
    from lmcache.domain.kv_layout import RegisteredLayout

__all__ = ("EngineDrivenPath",)

logger = logging.getLogger("lmcache.vllm.worker")


def _payload_shape(layout: RegisteredLayout) -> tuple[int, bool]:
    """`(hidden_dim_size, use_mla)` whose `[2 or 1, layers, slots, hidden]` object has our object's bytes."""
    if len(layout.groups) != 1:
        raise ValueError(
            "worker-side copies need every layer to share one shape and dtype; "
            "use lmcache.mp.mp_transfer_mode=engine_driven for this model"
        )
    geom = layout.groups[0].geometry
    if geom.fmt == KVFormat.MLA:
        return geom.width, True
    if geom.planes == 1:  # fused K/V: one plane of width 2 x heads x head size
        return geom.width // 2, False
    return geom.width, False


class EngineDrivenPath:
    """Registration and transfers of one CPU worker in engine-driven mode.

    Args:
        client: The worker's client.
        instance_id: Our registration id.
        model_name: Model name of the registration and keys.
        world_size: KV world size.
        tensors: The KV tensors in layer order, in physical dimension order.
        hints: Layout hints (`{"kv_layout": "HND"}` ...).
        block_size: Tokens per engine block.
        chunk_size: The server's chunk size.
        wait: Reply waiter.
    """

    mode = "engine_driven"

    def __init__(
        self,
        client: LMCacheClient,
        instance_id: int,
        model_name: str,
        world_size: int,
        tensors: Sequence[torch.Tensor],
        hints: dict[str, Any],
        block_size: int,
        chunk_size: int,
        wait: Waiter,
    ) -> None:
        if any(t.device.type != "cpu" for t in tensors):
            raise ValueError(
                "worker-side copies go through host memory and need CPU KV tensors; "
                "use lmcache.mp.mp_transfer_mode=engine_driven for CUDA tensors"
            )
        self.client = client
        self.instance_id = instance_id
        self.wait = wait
        self.tensors = list(tensors)
        self.layout = build_layout(
            [tensor_spec(t) for t in tensors],
            hints,
            [EngineGroup(0, tuple(range(len(tensors))), block_size)],
            chunk_size,
        )
        hidden, use_mla = _payload_shape(self.layout)
        dtype = self.layout.groups[0].geometry.dtype
        self.payload = RegisterEngineDrivenContextPayload(
            instance_id, model_name, world_size, block_size, len(tensors), hidden, dtype, use_mla, chunk_size
        )
        self.object_bytes = self.layout.object_bytes
        self._pool: ShmSegment | None = None
        self._pool_name = ""
        self._pool_copy: CpuKVTransfer | None = None
        self._registered = False

    def register(self) -> None:
        """Op 14 (a refresh when the server knows us); maps the server's pool when it has one."""
        reply = self.wait(self.client.call_async("register_kv_cache_engine_driven_context", self.payload))
        self._check_registered()
        name, size = str(reply.shm_name), int(reply.pool_size)
        if self._registered and name == self._pool_name:
            return
        self._registered = True
        self._close_pool()
        if name:
            self._pool = ShmSegment(name, size)
            arena = self._pool.tensor(torch.uint8, (size,), (1,), 0)
            self._pool_copy = CpuKVTransfer(self.layout, self.tensors, arena)
        self._pool_name = name
        logger.info(
            "Registered engine-driven KV transfer context (instance %d, %s)",
            self.instance_id,
            f"SHM pool {name} of {size} bytes" if name else "no SHM pool: chunk bytes in messages",
        )

    def _check_registered(self) -> None:
        """An empty `prepare_retrieve` succeeds only for a registered context (op 14 itself never fails)."""
        rid = f"lmcache-probe-{self.instance_id}"
        probe = CacheKey(self.payload.model_name, self.payload.world_size, 0, [], 0, 0, rid)
        answer = self.wait(self.client.call_async("prepare_retrieve", probe, self.instance_id))
        self.client.call_async("commit_retrieve", probe, self.instance_id)
        self.client.call_async("end_session", probe.request_id)
        if not answer.success:
            raise RegistrationRejectedError(
                f"LMCache server at {self.client.url} refused the engine-driven registration of instance "
                f"{self.instance_id} (a server started with --supported-transfer-mode lmcache_driven does); "
                "use lmcache.mp.mp_transfer_mode=engine_driven or start the server in auto mode"
            )

    def _staging(
        self, chunks: int, data: bytearray | None = None
    ) -> tuple[CpuKVTransfer, torch.Tensor, list[Extent]]:
        """A private arena for `chunks` objects (no pool; `data` fills it), its copier and the extents."""
        if data is None:
            arena = torch.empty(chunks * self.object_bytes, dtype=torch.uint8)
        else:
            arena = torch.frombuffer(data, dtype=torch.uint8)
        extents = [Extent(i * self.object_bytes, self.object_bytes) for i in range(chunks)]
        return CpuKVTransfer(self.layout, self.tensors, arena), arena, extents

    def _extents(self, slots: Sequence[dict[str, Any]]) -> list[Extent]:
        extents = [Extent(int(s["offset"]), int(s["length"])) for s in slots]
        if any(e.size != self.object_bytes for e in extents):
            raise ValueError(f"server slots are not {self.object_bytes}-byte chunks of our layout")
        return extents

    def _chunks(self, key: CacheKey) -> int:
        return (key.end - key.start) // self.layout.chunk_size

    def _store_one(self, key: CacheKey, block_ids: list[int]) -> Outcome:
        reply = self.wait(self.client.call_async("prepare_store", key, self.instance_id))
        context = reply.context
        if "slots" in context:
            if not context["slots"]:
                return Outcome.OK  # everything is cached already
            if self._pool_copy is None:
                return Outcome.UNKNOWN_INSTANCE  # the server has a pool we did not map: register again
            self._pool_copy.gather(
                [block_ids], list(context["chunk_indices"]), self._extents(context["slots"])
            )
            data = b""
        else:
            chunks = self._chunks(key)
            copier, arena, extents = self._staging(chunks)
            copier.gather([block_ids], list(range(chunks)), extents)
            data = encode_raw([arena.numpy().data])
        ok = bool(self.wait(self.client.call_async("commit_store", key, self.instance_id, data)))
        # A refused commit mostly means the server forgot our context (restart): registering again is a
        # cheap refresh otherwise.
        return Outcome.OK if ok else Outcome.UNKNOWN_INSTANCE

    def _retrieve_one(self, key: CacheKey, block_ids: list[int], skip: int) -> Outcome:
        reply = self.wait(self.client.call_async("prepare_retrieve", key, self.instance_id))
        if not reply.success:
            return Outcome.UNKNOWN_INSTANCE  # a miss, or a server that forgot us: refreshing is cheap
        chunks = self._chunks(key)
        try:
            if "slots" in reply.context:
                slots = reply.context["slots"]
                if self._pool_copy is None or len(slots) != chunks:
                    return Outcome.UNKNOWN_INSTANCE
                self._pool_copy.scatter([block_ids], list(range(chunks)), self._extents(slots), skip)
            else:
                views = decode_chunks(reply.data, self.object_bytes)
                if len(views) != chunks:
                    return Outcome.FAILED
                copier, _, extents = self._staging(chunks, bytearray(b"".join(views)))
                copier.scatter([block_ids], list(range(chunks)), extents, skip)
        finally:
            self.client.call_async("commit_retrieve", key, self.instance_id)
        return Outcome.OK

    def store(self, keys: Sequence[tuple[CacheKey, list[int]]]) -> list[Outcome]:
        """Prepare, gather and commit each range in turn."""
        outcomes = []
        for key, ids in keys:
            try:
                outcomes.append(self._store_one(key, ids))
            except Exception as exc:
                logger.warning("LMCache engine-driven store failed: %s", exc)
                outcomes.append(Outcome.FAILED)
        return outcomes

    def retrieve(self, keys: Sequence[tuple[CacheKey, list[int], int]]) -> list[Outcome]:
        """Prepare, scatter and commit each range in turn."""
        outcomes = []
        for key, ids, skip in keys:
            try:
                outcomes.append(self._retrieve_one(key, ids, skip))
            except Exception as exc:
                logger.warning("LMCache engine-driven retrieve failed: %s", exc)
                outcomes.append(Outcome.FAILED)
        return outcomes

    def unregister(self) -> None:
        """Op 15 (waits a few seconds at most)."""
        self.client.call("unregister_kv_cache_engine_driven_context", self.instance_id, timeout_s=5.0)

    def _close_pool(self) -> None:
        self._pool_copy = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def close(self) -> None:
        """Unmap the server's pool."""
        self._close_pool()
