"""A registration's KV layout as `/status` shows it (`cache_context_meta.<id>.kv_cache_layout`, §7.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmcache.domain.kv_layout import EngineDrivenLayout, KVFormat, RegisteredLayout

if TYPE_CHECKING:
    from lmcache.domain.kv_layout import KernelGroup, LayerGeometry
    from lmcache.domain.workers import Worker

__all__ = ("engine_kv_shape", "worker_meta")


def engine_kv_shape(geom: LayerGeometry) -> list[int]:
    """One layer's tensor shape in the engine, rebuilt from its detected format."""
    nb, bs, nh, hs = geom.num_blocks, geom.block_size, geom.heads, geom.head_size
    token_head = [nh, bs] if geom.heads_major else [bs, nh]
    if geom.fmt in (KVFormat.KV_FIRST_NHD, KVFormat.KV_FIRST_HND):
        return [2, nb, *token_head, hs]
    if geom.fmt in (KVFormat.BLOCKS_FIRST_NHD, KVFormat.BLOCKS_FIRST_HND):
        return [nb, 2, *token_head, hs]
    if geom.fmt == KVFormat.MLA:
        return [nb, bs, hs]
    return [nb, *token_head, hs]  # fused K/V: the last dimension holds K and V


def _kernel_group(group: KernelGroup, chunk_size: int) -> dict[str, Any]:
    geom = group.geometry
    shape = engine_kv_shape(geom)
    return {
        "kernel_group_idx": group.index,
        "engine_group_idx": group.block_list,
        "object_group_idx": 0,
        "num_layers": len(group.layers),
        "layer_indices": list(group.layers),
        "tokens_per_block": chunk_size // group.blocks_per_chunk,
        "slots_per_block": geom.block_size,
        "dtype": f"torch.{geom.dtype}",
        "engine_kv_concrete_shape": f"{len(group.layers)} x {shape}",
        "is_mla": geom.fmt == KVFormat.MLA,
        "engine_kv_format": geom.fmt.value,
        "engine_kv_shape": shape,
        "object_bytes": group.nbytes,
    }


def _layout(layout: Any, chunk_size: int) -> dict[str, Any]:
    if isinstance(layout, RegisteredLayout):
        return {
            "num_layers": layout.num_layers,
            "num_blocks": layout.groups[0].geometry.num_blocks if layout.groups else 0,
            "cache_size_per_token": layout.cache_size_per_token,
            "kernel_groups": [_kernel_group(g, layout.chunk_size) for g in layout.groups],
        }
    if isinstance(layout, EngineDrivenLayout):
        return {
            "num_layers": layout.num_layers,
            "num_blocks": None,  # the engine copies; its block pool is not registered with us
            "cache_size_per_token": layout.object_bytes // chunk_size,
            "kernel_groups": [
                {
                    "kernel_group_idx": 0,
                    "engine_group_idx": 0,
                    "object_group_idx": 0,
                    "num_layers": layout.num_layers,
                    "layer_indices": list(range(layout.num_layers)),
                    "dtype": f"torch.{layout.dtype.removeprefix('torch.')}",
                    "is_mla": layout.use_mla,
                    "object_shape": layout.shape,
                    "object_bytes": layout.object_bytes,
                }
            ],
        }
    return {"num_layers": None, "num_blocks": None, "cache_size_per_token": None, "kernel_groups": []}


def worker_meta(worker: Worker, chunk_size: int) -> dict[str, Any]:
    """`cache_context_meta.<instance_id>` of one registered worker."""
    return {
        "model_name": worker.model_name,
        "world_size": worker.world_size,
        "transfer_mode": worker.kind,
        "engine_type": worker.extra.get("engine_type"),
        "kv_cache_layout": _layout(worker.layout, chunk_size),
    }
