"""The lmcache-driven ops: register the KV tensors once, then the server copies on `store`/`retrieve`.

The connector takes this path for `lmcache.mp.mp_transfer_mode=engine_driven` (the spec's "IPC / SHM
zero-copy"), the default for CUDA tensors; config.py explains the naming.

CPU tensors are migrated to POSIX SHM (`kv_tensors.migrate_to_shm`); CUDA tensors travel as IPC handles
and their copies are ordered by interprocess events (wire-protocol.md §4.4). Registration is checked with
an empty `store`: LMCache servers answer a registered instance with a non-empty event handle and an unknown
one with `(b"", False)`, so a server that could not map our tensors (a CPU-only server given CUDA handles,
say) is reported at start-up instead of turning every store into a silent miss.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo
from lmcache.adapters.vllm.kv_tensors import cuda_descriptor, migrate_to_shm
from lmcache.adapters.vllm.transfer_base import EVENT_STUB, Outcome, RegistrationRejectedError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.transport.wire_types import Descriptor
    from lmcache.adapters.vllm.kv_tensors import ShmKVStorage
    from lmcache.adapters.vllm.transfer_base import Waiter

__all__ = ("LmcacheDrivenPath",)

logger = logging.getLogger("lmcache.vllm.worker")


class LmcacheDrivenPath:
    """Registration and transfers of one worker in lmcache-driven mode.

    Args:
        client: The worker's client.
        instance_id: Our registration id.
        model_name: Model name of the registration and keys.
        world_size: KV world size.
        tensors: The KV tensors in layer order (CPU or CUDA, not mixed).
        hints: Layout hints (`{"kv_layout": "HND"}` ...).
        block_size: Tokens per engine block.
        wait: Reply waiter.
    """

    mode = "lmcache_driven"

    def __init__(
        self,
        client: LMCacheClient,
        instance_id: int,
        model_name: str,
        world_size: int,
        tensors: Sequence[torch.Tensor],
        hints: dict[str, Any],
        block_size: int,
        wait: Waiter,
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self.model_name = model_name
        self.world_size = world_size
        self.hints = hints
        self.wait = wait
        self.groups = [EngineGroupInfo(0, tuple(range(len(tensors))), block_size)]
        self.cuda = tensors[0].device.type == "cuda"
        self._storages: list[ShmKVStorage] = []
        if self.cuda:
            self.descriptors: list[Descriptor] = [cuda_descriptor(t) for t in tensors]
        else:
            shm, self._storages = migrate_to_shm(tensors)
            self.descriptors = list(shm)
        self.device = tensors[0].device

    def register(self) -> None:
        """Send `register_kv_cache` (a refresh when the server knows us) and check that it took."""
        self.client.register_kv_cache(
            self.instance_id,
            self.descriptors,
            self.model_name,
            self.world_size,
            "vllm",
            self.hints,
            self.groups,
        )
        probe = CacheKey(self.model_name, self.world_size, 0, [], 0, 0, f"lmcache-probe-{self.instance_id}")
        handle, _ = self.client.store(probe, self.instance_id, [[]], self._event())
        self.client.call_async("end_session", probe.request_id)
        if not handle:
            where = (
                "the server has no GPU data path for CUDA tensors (run `lmcache server` on the GPU host with "
                "CUDA available) or cannot open their IPC handles"
                if self.cuda
                else "the server could not map the KV cache's shared-memory segments (is it on this host?)"
            )
            raise RegistrationRejectedError(
                f"LMCache server at {self.client.url} rejected the KV cache registration of instance "
                f"{self.instance_id}: {where}; see the server log and /status"
            )

    def _event(self) -> bytes:
        """An interprocess event recorded after the work queued so far (CPU: the stub handle)."""
        if not self.cuda:
            return EVENT_STUB
        event = torch.cuda.Event(interprocess=True)  # type: ignore[no-untyped-call]
        event.record()
        return bytes(event.ipc_handle())  # type: ignore[no-untyped-call]

    def _finish(self, reply: Any) -> Outcome:
        handle, ok = bytes(reply[0]), bool(reply[1])
        if not handle:
            return Outcome.UNKNOWN_INSTANCE
        if self.cuda and handle != EVENT_STUB:
            torch.cuda.Event.from_ipc_handle(self.device, handle).wait()  # type: ignore[no-untyped-call]
        return Outcome.OK if ok else Outcome.FAILED

    def _collect(self, futures: list[Future[Any]]) -> list[Outcome]:
        outcomes = []
        for future in futures:
            try:
                outcomes.append(self._finish(self.wait(future)))
            except Exception as exc:
                logger.warning("LMCache transfer got no usable reply: %s", exc)
                outcomes.append(Outcome.FAILED)
        return outcomes

    def store(self, keys: Sequence[tuple[CacheKey, list[int]]]) -> list[Outcome]:
        """One `store` per key, all in flight at once."""
        event = self._event()
        return self._collect(
            [self.client.call_async("store", key, self.instance_id, [ids], event) for key, ids in keys]
        )

    def retrieve(self, keys: Sequence[tuple[CacheKey, list[int], int]]) -> list[Outcome]:
        """One `retrieve` per key, all in flight at once; the blocks are written when this returns."""
        event = self._event()
        return self._collect(
            [
                self.client.call_async("retrieve", key, self.instance_id, [ids], event, skip)
                for key, ids, skip in keys
            ]
        )

    def unregister(self) -> None:
        """`unregister_kv_cache` (waits a few seconds at most)."""
        self.client.call("unregister_kv_cache", self.instance_id, timeout_s=5.0)

    def close(self) -> None:
        """Unlink our SHM segment names."""
        for storage in self._storages:
            storage.unlink()
