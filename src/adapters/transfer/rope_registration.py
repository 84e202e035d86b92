"""`cb_register_rope` on CPU (cacheblend.md §4.1): map the cos/sin caches and build the instance's scatter.

Each cache arrives as a `cpu_shm` descriptor of vLLM's `cos_sin_cache` (`[max_position, rot_dim]`,
`[cos | sin]` per row); it is mapped read-write like the KV segments and never unlinked. A cache scaled
by YaRN or longrope (mscale != 1) is replaced by a private copy divided by its mscale. CUDA descriptors
need the GPU data path, which this build does not have: they fail the registration, saying so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transfer.blend_scatter import CpuBlendScatter
from lmcache.adapters.transfer.cpu_kv import torch_dtype
from lmcache.adapters.transfer.rope_math import strip_mscale
from lmcache.adapters.transfer.shm_segment import ShmSegment
from lmcache.adapters.transport.wire_types import CpuShmDescriptor
from lmcache.domain.blend_registry import RopeRegistration
from lmcache.domain.blend_rope import CacheShape, RopeError, RopeSpec, plan_rotation
from lmcache.domain.kv_layout import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

    from lmcache.adapters.transport.wire_types import Descriptor
    from lmcache.domain.blend_registry import RopeRegistry
    from lmcache.domain.workers import WorkerRegistry

__all__ = ("CpuRopeRegistrar",)
logger = logging.getLogger("lmcache.blend")


class CpuRopeRegistrar:
    """Registers CacheBlend rope state for lmcache-driven CPU workers.

    Args:
        workers: The worker registry (the instance's KV registration).
        registry: Where registrations live.
        arena: Returns the L1 arena as uint8 (asked at each registration, never at start-up).
        shm_dir: Where POSIX SHM lives.
    """

    def __init__(
        self,
        workers: WorkerRegistry,
        registry: RopeRegistry,
        arena: Callable[[], torch.Tensor],
        shm_dir: str = "/dev/shm",
    ) -> None:
        self.workers = workers
        self.registry = registry
        self.arena = arena
        self.shm_dir = shm_dir

    def register(
        self,
        instance_id: int,
        descriptors: Sequence[Descriptor],
        head_size: int,
        is_neox_style: bool,
        group_to_cache: Sequence[int],
        group_rot: Sequence[Sequence[int]],
        group_head_size: Sequence[int],
        kv_quant: str,
    ) -> None:
        """Validate, map and store (replacing a previous registration of the instance).

        Raises:
            RopeError: No KV registration, a cache that is not a 2-D float `cpu_shm` tensor, or a
                declaration that does not fit the layout.
        """
        worker = self.workers.get(instance_id)
        if worker is None or worker.transfer is None or worker.kind != "lmcache_driven":
            raise RopeError(
                f"instance {instance_id} has no lmcache-driven KV registration (register_kv_cache)"
            )
        segments: list[ShmSegment] = []
        try:
            caches = [self._map(i, d, segments) for i, d in enumerate(descriptors)]
            spec = RopeSpec(
                head_size,
                is_neox_style,
                tuple(group_to_cache),
                tuple(tuple(r) for r in group_rot),
                tuple(group_head_size),
                kv_quant,
                tuple(
                    CacheShape(c.shape[0], c.shape[1], str(c.dtype).removeprefix("torch.")) for c in caches
                ),
            )
            plan = plan_rotation(spec, worker.layout, worker.extra.get("engine_group_ids", ()))
            stripped = [strip_mscale(c) for c in caches]
            meta = _meta(spec, [m for _, m in stripped], plan.groups)
            scatter = CpuBlendScatter(
                worker.layout,
                worker.transfer.layers,
                self.arena(),
                plan,
                [c for c, _ in stripped],
                meta,
                segments,
            )
        except Exception:
            for segment in segments:
                segment.close()
            raise
        self.registry.put(RopeRegistration(instance_id, worker.model_name, worker.world_size, plan, scatter))
        logger.info(
            "Registered CacheBlend RoPE for instance %d: %d cache(s), head_size %d, %s",
            instance_id,
            len(caches),
            head_size,
            "NeoX" if is_neox_style else "GPT-J",
        )

    def _map(self, number: int, desc: Descriptor, segments: list[ShmSegment]) -> torch.Tensor:
        if not isinstance(desc, CpuShmDescriptor):
            raise RopeError(
                f"cos/sin cache {number}: {type(desc).__name__} descriptors need the GPU data path, "
                "which this server build does not include"
            )
        meta = desc.metadata
        if len(meta.shape) != 2:
            raise RopeError(
                f"cos/sin cache {number} has shape {meta.shape} (expected [max_position, rot_dim])"
            )
        dtype = torch_dtype(meta.dtype)
        spec = TensorSpec(
            meta.dtype.removeprefix("torch."), tuple(meta.shape), tuple(meta.stride), meta.storage_offset
        )
        if min(meta.shape) < 1 or spec.span_bytes() > desc.nbytes:
            raise RopeError(
                f"cos/sin cache {number} is empty or spans more than its {desc.nbytes}-byte segment"
            )
        segment = ShmSegment(desc.shm_name, desc.nbytes, self.shm_dir)
        segments.append(segment)
        return segment.tensor(dtype, spec.shape, spec.stride, spec.storage_offset)

    def unregister(self, instance_id: int) -> bool:
        """Drop the instance's registration; False when there was none."""
        return self.registry.drop(instance_id)


def _meta(spec: RopeSpec, mscales: list[float], groups: Sequence[Any]) -> dict[str, Any]:
    return {
        "head_size": spec.head_size,
        "is_neox_style": spec.is_neox_style,
        "group_to_cache": list(spec.group_to_cache),
        "group_rot": [list(r) for r in spec.group_rot],
        "group_head_size": list(spec.group_head_size),
        "kv_quant": spec.kv_quant,
        "caches": [
            {"max_position": c.max_position, "rot_dim": c.rot_dim, "dtype": c.dtype, "mscale": round(m, 4)}
            for c, m in zip(spec.caches, mscales, strict=True)
        ],
        "rotated_kernel_groups": [g.kernel_group for g in groups if g.cache >= 0],
    }
