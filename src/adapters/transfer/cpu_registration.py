"""`register_kv_cache` for CPU workers: map the engine's SHM segments and build the instance's transfer.

CUDA descriptors need the GPU data path, which this build does not have: they fail registration with a
message saying so (the engine then recomputes; see wire-protocol.md §1.8 on void registration ops).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer, torch_dtype
from lmcache.adapters.transfer.cpu_placement import CopyPlacement
from lmcache.adapters.transfer.shm_segment import ShmSegment
from lmcache.adapters.transport.wire_types import CpuShmDescriptor
from lmcache.domain.kv_layout import EngineGroup, LayoutError, TensorSpec, build_layout
from lmcache.domain.workers import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractContextManager

    import torch

    from lmcache.adapters.transport.wire_types import Descriptor, EngineGroupInfo
    from lmcache.domain.workers import WorkerRegistry

__all__ = ("CpuRegistrar", "RegistrationError")
logger = logging.getLogger("lmcache.registration")


def _memory_signature(descriptors: Sequence[Descriptor], model_name: str) -> tuple[Any, ...]:
    """What identifies the engine memory a registration maps: segment names, sizes and tensor metadata."""
    parts: list[Any] = [model_name]
    for desc in descriptors:
        if isinstance(desc, CpuShmDescriptor):
            meta = desc.metadata
            parts.append((desc.shm_name, desc.nbytes, meta.dtype, tuple(meta.shape), tuple(meta.stride)))
        else:
            parts.append(repr(desc))
    return tuple(parts)


class RegistrationError(ValueError):
    """A registration that cannot be served; the message names the instance and the reason."""


class CpuRegistrar:
    """Registers and unregisters lmcache-driven CPU workers.

    Args:
        workers: The worker registry.
        arena: Returns the L1 arena as one uint8 tensor; asked at each registration (never at start-up,
            so torch can load after the ready line).
        chunk_size: `--chunk-size`.
        shm_dir: Where POSIX SHM lives.
        ensure_backed: Backs an L1 range before a store copies into it (the L1 memory's populator).
        is_backed: Whether an L1 range is already backed.
        copying: A context around each request's copies (the L1 memory's populator stands aside).
        copy_threads: Threads one request's copies are split over.
        copy_pin: Whether those threads run on different CPUs for each copy (`--kv-copy-pin`).
    """

    def __init__(
        self,
        workers: WorkerRegistry,
        arena: Callable[[], torch.Tensor],
        chunk_size: int,
        shm_dir: str = "/dev/shm",
        *,
        ensure_backed: Callable[[int, int], None] | None = None,
        is_backed: Callable[[int, int], bool] | None = None,
        copying: Callable[[], AbstractContextManager[object]] | None = None,
        copy_threads: int = 1,
        copy_pin: bool = True,
    ) -> None:
        self.workers = workers
        self.arena = arena
        self.chunk_size = chunk_size
        self.shm_dir = shm_dir
        self.ensure_backed = ensure_backed
        self.is_backed = is_backed
        self.copying = copying
        self.copy_threads = copy_threads
        self.copy_pin = copy_pin

    def replaces(self, instance_id: int, descriptors: Sequence[Descriptor], model_name: str) -> bool:
        """Whether registering these descriptors would replace a registration of other memory.

        An engine that restarted (or a new worker reusing a dead one's instance id before the reaper ran)
        registers new segments under the old id; keeping the old mapping would copy into memory nobody
        reads any more, so the caller drops the old registration first.
        """
        worker = self.workers.get(instance_id, touch=False)
        if worker is None:
            return False
        return worker.extra.get("memory") != _memory_signature(descriptors, model_name)

    def register(
        self,
        instance_id: int,
        descriptors: Sequence[Descriptor],
        model_name: str,
        world_size: int,
        engine_type: str,
        hints: Mapping[str, Any],
        groups: Sequence[EngineGroupInfo],
    ) -> bool:
        """Register or refresh; returns False when the instance was already registered (refreshed)."""
        if self.workers.get(instance_id) is not None:
            return False
        specs: list[TensorSpec] = []
        for number, desc in enumerate(descriptors):
            if not isinstance(desc, CpuShmDescriptor):
                raise RegistrationError(
                    f"layer {number}: {type(desc).__name__} descriptors need the GPU data path, which this "
                    "server build does not include (CPU workers register with cpu_shm)"
                )
            meta = desc.metadata
            spec = TensorSpec(
                meta.dtype.removeprefix("torch."), tuple(meta.shape), tuple(meta.stride), meta.storage_offset
            )
            if spec.span_bytes() > desc.nbytes:
                raise RegistrationError(
                    f"layer {number}: tensor spans {spec.span_bytes()} bytes, segment "
                    f"{desc.shm_name!r} maps {desc.nbytes}"
                )
            specs.append(spec)
        try:
            layout = build_layout(
                specs,
                hints,
                [EngineGroup(g.engine_group_id, g.layer_indices, g.tokens_per_block) for g in groups],
                self.chunk_size,
            )
        except LayoutError as exc:
            raise RegistrationError(str(exc)) from exc
        segments: dict[str, ShmSegment] = {}
        try:
            layers = []
            for desc, spec in zip(descriptors, specs, strict=True):
                assert isinstance(desc, CpuShmDescriptor)
                segment = segments.get(desc.shm_name)
                if segment is None:
                    segment = segments[desc.shm_name] = ShmSegment(desc.shm_name, desc.nbytes, self.shm_dir)
                layers.append(
                    segment.tensor(torch_dtype(spec.dtype), spec.shape, spec.stride, spec.storage_offset)
                )
            transfer = CpuKVTransfer(
                layout,
                layers,
                self.arena(),
                list(segments.values()),
                ensure_backed=self.ensure_backed,
                is_backed=self.is_backed,
                copying=self.copying,
                threads=self.copy_threads,
                placement=CopyPlacement(self.copy_pin),
            )
        except Exception as exc:
            for segment in segments.values():
                segment.close()
            raise RegistrationError(str(exc)) from exc
        now = self.workers.now()
        fmt = layout.groups[0].geometry.fmt.value
        extra: dict[str, Any] = {"engine_type": engine_type, "kv_layout_hints": dict(hints), "format": fmt}
        extra["engine_group_ids"] = [g.engine_group_id for g in groups]  # CacheBlend's block tables
        extra["recurrent_groups"] = any(g.recurrent_state for g in groups)
        worker = Worker(instance_id, model_name, world_size, "lmcache_driven", layout, transfer, now, now)
        worker.extra.update(extra)
        self.workers.add(worker)
        logger.info("Registered KV cache for GPU ID %d with %d layers", instance_id, layout.num_layers)
        return True

    def release(self, worker: Worker) -> None:
        """Unmap a removed worker's memory."""
        if worker.transfer is not None:
            worker.transfer.close()
