"""Per-chunk digests of a registered worker's KV blocks (wire-protocol.md §7.1), as the bench compares them.

Checks run in LMCache's order: no lmcache-driven transfer path -> 501, unknown instance -> 404, empty
`block_ids` -> 400, `chunk_size` <= 0 -> 400, a layer format without a block axis (fused K/V) -> 501. Block
ids outside the engine's pool are a 400 too (LMCache answers those with a 500), and so are more ids than
the pool has blocks, so one request costs at most one pass over the engine's KV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmcache.adapters.http.errors import bad_request, http_error
from lmcache.adapters.transfer.checksums import block_checksums, block_id_ranges
from lmcache.domain.kv_layout import KVFormat, RegisteredLayout

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.adapters.http.services import HttpServices

__all__ = ("default_chunk_blocks", "worker_checksums")

_NO_BLOCK_AXIS = (KVFormat.FUSED_NHD, KVFormat.FUSED_HND)


def _registered(services: HttpServices, instance_id: int) -> tuple[RegisteredLayout, Sequence[Any]]:
    if services.settings.supported_transfer_mode == "engine_driven":
        raise http_error(
            501, "checksums need the lmcache-driven path (--supported-transfer-mode lmcache_driven or auto)"
        )
    worker = services.engine.workers.get(instance_id, touch=False)
    if worker is None:
        raise http_error(404, f"instance_id {instance_id} not registered")
    layers = getattr(worker.transfer, "layers", None)
    if not isinstance(worker.layout, RegisteredLayout) or layers is None:
        raise http_error(
            501,
            f"instance_id {instance_id} registered engine-driven: its blocks are not mapped by the server",
        )
    if not layers:
        raise http_error(404, f"instance_id {instance_id} not registered")
    return worker.layout, layers


def default_chunk_blocks(services: HttpServices, instance_id: int) -> int:
    """Blocks per chunk of the instance's first kernel group (what the bench sends as `chunk_size`)."""
    layout, _ = _registered(services, instance_id)
    return layout.groups[0].blocks_per_chunk


def worker_checksums(
    services: HttpServices, instance_id: int, block_ids: list[int], chunk_size: int, layerwise: bool
) -> dict[str, Any]:
    """The `/cache/checksums` answer; raises a 4xx/501 naming the problem."""
    layout, layers = _registered(services, instance_id)
    if not block_ids:
        raise bad_request("block_ids", "block_ids is required")
    if chunk_size <= 0:
        raise bad_request("chunk_size", f"must be > 0 blocks per chunk, got {chunk_size}")
    axes = set()
    for group in layout.groups:
        if group.geometry.fmt in _NO_BLOCK_AXIS:
            raise http_error(501, f"layer format {group.geometry.fmt.value} has no block axis to checksum")
        axes.add(group.geometry.block_axis)
    if len(axes) != 1:
        raise http_error(501, "layers disagree on their block axis; checksums need one")
    axis = axes.pop()
    pool = min(layer.shape[axis] for layer in layers)
    if len(block_ids) > pool:  # bounds the work to one pass over the engine's pool
        raise bad_request("block_ids", f"at most {pool} block ids (the engine's pool), got {len(block_ids)}")
    low, high = min(block_ids), max(block_ids)
    if low < 0 or high >= pool:
        bad = low if low < 0 else high
        raise bad_request("block_ids", f"block id {bad} outside the engine's pool [0, {pool})")
    sums: list[str] | dict[str, list[str]]
    if layerwise:
        sums = {
            f"layer_{i}": block_checksums([layer], block_ids, chunk_size, axis)
            for i, layer in enumerate(layers)
        }
    else:
        sums = block_checksums(layers, block_ids, chunk_size, axis)
    return {
        "status": "success",
        "chunk_size": chunk_size,
        "num_chunks": -(-len(block_ids) // chunk_size),
        "chunk_checksums": sums,
        "layerwise": layerwise,
        "block_id_ranges": block_id_ranges(block_ids),
    }
