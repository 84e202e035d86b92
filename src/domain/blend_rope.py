"""What `cb_register_rope` declares and what it means per kernel group (cacheblend.md §4.1-4.2).

Pure arithmetic over the registered layout: which plane of which kernel group is re-rotated, with which
cos/sin cache, over which elements of each head, pairing NeoX halves or GPT-J neighbours, and whether
uint8 KV is an fp8 flavour. The transfer adapter turns a `RopePlan` into tensor views and math.

Rules: only K is rotated (plane 0 of split K/V; the K half of each head of fused K/V; the declared
`[offset, offset+width)` window of an MLA row). Only the first `rot_dim` elements (the cache's column
count) of the window are touched (partial rotary). Groups with cache -1, a `[]` rotation, no caches at
all (NoPE), or a non-float dtype that is not a declared fp8 flavour are copied unrotated. Compressed
groups (tokens per block != slots per block) cannot be scattered per token: they fail the retrieve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.kv_layout import KVFormat

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.kv_layout import KernelGroup, RegisteredLayout

__all__ = (
    "KV_QUANT_FLAVOURS",
    "CacheShape",
    "GroupRotation",
    "RopeError",
    "RopePlan",
    "RopeSpec",
    "plan_rotation",
)

KV_QUANT_FLAVOURS = ("", "fp8_e4m3", "fp8_e5m2")
_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "half", "float"})
_FP8_DTYPES = frozenset({"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"})


class RopeError(ValueError):
    """A `cb_register_rope` whose declaration cannot be served; the message says which value and why."""


@dataclass(frozen=True, slots=True)
class CacheShape:
    """One registered cos/sin cache: `[max_position, rot_dim]`."""

    max_position: int
    rot_dim: int
    dtype: str


@dataclass(frozen=True, slots=True)
class RopeSpec:
    """The payloads of `cb_register_rope` (the caches reduced to their shapes)."""

    head_size: int
    is_neox_style: bool
    group_to_cache: tuple[int, ...]
    group_rot: tuple[tuple[int, ...], ...]
    group_head_size: tuple[int, ...]
    kv_quant: str
    caches: tuple[CacheShape, ...]


@dataclass(frozen=True, slots=True)
class GroupRotation:
    """How one kernel group's K is re-rotated.

    Attributes:
        kernel_group: Index in the layout.
        engine_group: The engine group (index into a retrieve's block tables).
        cache: Index of the cos/sin cache; -1 = copied unrotated.
        heads: Heads per token row.
        head_stride: Elements per head in the row.
        offset: First rotated element within a head.
        rot_dim: Rotated elements per head (even).
        fp8: `kv_quant` flavour of uint8 K ("" = not uint8-encoded).
        unsupported: Why this group cannot be scattered ("" = it can).
    """

    kernel_group: int
    engine_group: int
    cache: int
    heads: int = 1
    head_stride: int = 0
    offset: int = 0
    rot_dim: int = 0
    fp8: str = ""
    unsupported: str = ""


@dataclass(frozen=True, slots=True)
class RopePlan:
    """Every kernel group's rotation plus the pairing style."""

    neox: bool
    groups: tuple[GroupRotation, ...]


def _check_spec(spec: RopeSpec, engine_groups: int) -> None:
    if spec.kv_quant not in KV_QUANT_FLAVOURS:
        raise RopeError(f"kv_quant {spec.kv_quant!r} is not one of {KV_QUANT_FLAVOURS}")
    if spec.head_size < 1:
        raise RopeError(f"head_size must be >= 1, got {spec.head_size}")
    for i, cache in enumerate(spec.caches):
        if cache.rot_dim < 2 or cache.rot_dim % 2 or cache.max_position < 1:
            raise RopeError(f"cos/sin cache {i} has shape [{cache.max_position}, {cache.rot_dim}]")
        if cache.dtype not in _FLOAT_DTYPES:
            raise RopeError(f"cos/sin cache {i} has dtype {cache.dtype} (a float dtype is required)")
    for name, values in (
        ("group_to_cache", spec.group_to_cache),
        ("group_rot", spec.group_rot),
        ("group_head_size", spec.group_head_size),
    ):
        if values and len(values) < engine_groups:
            raise RopeError(f"{name} names {len(values)} of {engine_groups} engine groups")
    _check_maps(spec)


def _check_maps(spec: RopeSpec) -> None:
    n = len(spec.caches)
    if spec.group_to_cache:
        bad = [c for c in spec.group_to_cache if not -1 <= c < n]
        if bad:
            raise RopeError(f"group_to_cache values {bad} are outside [-1, {n})")
    for entry in spec.group_rot:
        if entry and (len(entry) != 2 or entry[0] < 0 or entry[1] <= 0):
            raise RopeError(f"group_rot entry {list(entry)} is not [] or [offset >= 0, width > 0]")
    if spec.group_head_size and min(spec.group_head_size) < 1:
        raise RopeError("group_head_size values must be >= 1")


def plan_rotation(spec: RopeSpec, layout: RegisteredLayout, engine_group_ids: Sequence[int]) -> RopePlan:
    """Validate the declaration against the registered layout and plan each kernel group.

    Args:
        spec: The registration.
        layout: The instance's object layout.
        engine_group_ids: `engine_group_id` of each `EngineGroupInfo`, in registration order.

    Raises:
        RopeError: A value out of range, a map that does not cover every engine group, or a rotary
            window that does not fit the heads.
    """
    ids = list(engine_group_ids) or list(range(layout.num_block_lists))
    _check_spec(spec, max(ids, default=-1) + 1)
    groups = tuple(_group(spec, kg, ids[kg.block_list], layout) for kg in layout.groups)
    return RopePlan(spec.is_neox_style, groups)


def _group(spec: RopeSpec, kg: KernelGroup, engine_group: int, layout: RegisteredLayout) -> GroupRotation:
    geom = kg.geometry
    if kg.slots != layout.chunk_size:
        reason = f"kernel group {kg.index} is compressed ({kg.slots} slots per {layout.chunk_size} tokens)"
        return GroupRotation(kg.index, engine_group, -1, unsupported=reason)
    cache = (spec.group_to_cache[engine_group] if spec.group_to_cache else 0) if spec.caches else -1
    rot = spec.group_rot[engine_group] if spec.group_rot else ()
    if spec.group_rot and not rot:
        cache = -1
    dtype = geom.dtype.removeprefix("torch.")
    fp8 = ""
    if dtype == "uint8" and spec.kv_quant:
        fp8 = spec.kv_quant
    elif dtype not in _FLOAT_DTYPES and dtype not in _FP8_DTYPES:
        cache = -1
    if cache < 0:
        return GroupRotation(kg.index, engine_group, -1)
    rot_dim = spec.caches[cache].rot_dim
    offset, width = (rot[0], rot[1]) if rot else (0, rot_dim)
    if width != rot_dim:
        raise RopeError(
            f"engine group {engine_group}: rotary width {width} != rot_dim {rot_dim} of cache {cache}"
        )
    per_head = spec.group_head_size[engine_group] if spec.group_head_size else spec.head_size
    if offset > 0:  # MLA: the RoPE part trails the latent in a single-plane row
        if geom.planes != 1 or offset + width != geom.width:
            raise RopeError(
                f"engine group {engine_group}: MLA window [{offset}, {offset + width}) must end the "
                f"{geom.width}-wide row of a single-plane cache"
            )
        return GroupRotation(kg.index, engine_group, cache, 1, geom.width, offset, rot_dim, fp8)
    stride = 2 * per_head if geom.fmt in (KVFormat.FUSED_NHD, KVFormat.FUSED_HND) else per_head
    if geom.fmt == KVFormat.MLA:
        stride = geom.width if not spec.group_head_size else stride
    if stride < 1 or geom.width % stride:
        raise RopeError(f"engine group {engine_group}: row width {geom.width} is not a multiple of {stride}")
    if rot_dim > per_head:
        raise RopeError(f"engine group {engine_group}: rot_dim {rot_dim} exceeds the head size {per_head}")
    return GroupRotation(kg.index, engine_group, cache, geom.width // stride, stride, 0, rot_dim, fp8)
