"""KV layouts (wire-protocol.md §5.1, §5.11): engines' KV tensors and what one L1 object holds.

Pure shape arithmetic: the transfer adapters turn a `RegisteredLayout` into tensor views. Every L1 object
is token-major, `[plane][layer][token][head·dim]` per kernel group, whatever the engine's block layout, so
the same object serves an NHD and an HND engine of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Element sizes of the torch dtype names engines send (`torch.` prefix stripped).
DTYPE_ITEMSIZE: dict[str, int] = {
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "float": 4,
    "half": 2,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1,
}


class LayoutError(ValueError):
    """A registration whose tensors or groups cannot be served; the message says which and why."""


class KVFormat(StrEnum):
    """Engine KV formats, named as LMCache's `/status` names them."""

    KV_FIRST_NHD = "NL_X_TWO_NB_BS_NH_HS"
    KV_FIRST_HND = "NL_X_TWO_NB_NH_BS_HS"
    BLOCKS_FIRST_NHD = "NL_X_NB_TWO_BS_NH_HS"
    BLOCKS_FIRST_HND = "NL_X_NB_TWO_NH_BS_HS"
    MLA = "NL_X_NB_BS_HS"
    FUSED_NHD = "NL_X_NB_BS_NH_TWO_HS"
    FUSED_HND = "NL_X_NB_NH_BS_TWO_HS"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One registered tensor as described on the wire (§4.1 metadata), in physical dimension order."""

    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int = 0

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return dtype_itemsize(self.dtype)

    def span_bytes(self) -> int:
        """Bytes from the storage start to one past the last element (0 for an empty tensor)."""
        if any(d == 0 for d in self.shape):
            return 0
        last = self.storage_offset + sum((d - 1) * s for d, s in zip(self.shape, self.stride, strict=True))
        return (last + 1) * self.itemsize


@dataclass(frozen=True, slots=True)
class LayerGeometry:
    """How one layer's tensor holds blocks.

    Attributes:
        fmt: The detected format.
        planes: 2 for split K/V, 1 for MLA and fused K/V.
        num_blocks: Engine blocks in the tensor.
        block_size: Token slots per block.
        width: Elements per token and plane (heads x head size; x2 for fused K/V).
        heads: Heads (1 for MLA).
        head_size: Elements per head (fused: 2 x head size).
        heads_major: True when a block stores heads before tokens (HND), so copies transpose.
        block_axis: The tensor dimension that indexes blocks.
        dtype: Torch dtype name.
    """

    fmt: KVFormat
    planes: int
    num_blocks: int
    block_size: int
    width: int
    heads: int
    head_size: int
    heads_major: bool
    block_axis: int
    dtype: str

    def same_kind(self, other: LayerGeometry) -> bool:
        """True when two layers can share one kernel group (same everything but nothing per-layer)."""
        return self == other


def dtype_itemsize(name: str) -> int:
    """Element size of a torch dtype name, or LayoutError naming it."""
    size = DTYPE_ITEMSIZE.get(name.removeprefix("torch."))
    if size is None:
        raise LayoutError(f"unsupported dtype {name!r}")
    return size


def detect_layer(spec: TensorSpec, kv_layout: str | None, cpu_only: bool = True) -> LayerGeometry:
    """Detect a layer's format from its physical shape and the `kv_layout` hint (§5.1 table).

    A missing hint means HND on a CPU-only server and NHD otherwise, as LMCache assumes; `BLHNC` counts as
    HND and `BLNHC` as NHD.
    """
    layout = _normalise_hint(kv_layout, cpu_only)
    hnd = layout == "HND"
    shape, dtype = spec.shape, spec.dtype.removeprefix("torch.")
    dtype_itemsize(dtype)
    if len(shape) == 5 and shape[0] == 2:
        nb, a, b, hs = shape[1], shape[2], shape[3], shape[4]
        bs, nh = (b, a) if hnd else (a, b)
        fmt = KVFormat.KV_FIRST_HND if hnd else KVFormat.KV_FIRST_NHD
        return LayerGeometry(fmt, 2, nb, bs, nh * hs, nh, hs, hnd, 1, dtype)
    if len(shape) == 5 and shape[1] == 2:
        nb, a, b, hs = shape[0], shape[2], shape[3], shape[4]
        bs, nh = (b, a) if hnd else (a, b)
        fmt = KVFormat.BLOCKS_FIRST_HND if hnd else KVFormat.BLOCKS_FIRST_NHD
        return LayerGeometry(fmt, 2, nb, bs, nh * hs, nh, hs, hnd, 0, dtype)
    if len(shape) == 3:
        nb, bs, hs = shape
        return LayerGeometry(KVFormat.MLA, 1, nb, bs, hs, 1, hs, False, 0, dtype)
    if len(shape) == 4:
        nb, a, b, hs2 = shape
        bs, nh = (b, a) if hnd else (a, b)
        fmt = KVFormat.FUSED_HND if hnd else KVFormat.FUSED_NHD
        return LayerGeometry(fmt, 1, nb, bs, nh * hs2, nh, hs2, hnd, 0, dtype)
    raise LayoutError(f"unsupported KV tensor shape {list(shape)} (expected rank 3, 4 or 5)")


def _normalise_hint(kv_layout: str | None, cpu_only: bool) -> str:
    if kv_layout in (None, ""):
        return "HND" if cpu_only else "NHD"
    mapping = {"NHD": "NHD", "HND": "HND", "BLNHC": "NHD", "BLHNC": "HND"}
    if kv_layout not in mapping:
        raise LayoutError(f"unknown kv_layout hint {kv_layout!r}")
    return mapping[kv_layout]


@dataclass(frozen=True, slots=True)
class EngineGroup:
    """One `EngineGroupInfo` (§3.2): the layers whose blocks one inner block-id list addresses."""

    engine_group_id: int
    layer_indices: tuple[int, ...]
    tokens_per_block: int = 0


@dataclass(frozen=True, slots=True)
class KernelGroup:
    """Layers copied together: one engine group and one geometry; one tensor of the L1 object.

    Attributes:
        index: Position in the layout (kernel group index).
        block_list: Which inner list of `block_ids` addresses this group's blocks.
        layers: Indices into the registered tensor list.
        geometry: Their common geometry.
        blocks_per_chunk: Engine blocks per chunk.
        slots: Token slots per chunk (the object's S).
        offset: Byte offset of this group's tensor inside the object.
    """

    index: int
    block_list: int
    layers: tuple[int, ...]
    geometry: LayerGeometry
    blocks_per_chunk: int
    slots: int
    offset: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """`(P, L, S, W)` of this group's part of an object."""
        return (self.geometry.planes, len(self.layers), self.slots, self.geometry.width)

    @property
    def nbytes(self) -> int:
        """Bytes of this group's part of an object."""
        p, n, s, w = self.shape
        return p * n * s * w * dtype_itemsize(self.geometry.dtype)


@dataclass(frozen=True, slots=True)
class RegisteredLayout:
    """The L1 object layout of one registration; lookups of (model, world_size) use its object size."""

    chunk_size: int
    groups: tuple[KernelGroup, ...]
    num_layers: int
    num_block_lists: int

    @property
    def object_bytes(self) -> int:
        """Bytes of one L1 object (one chunk, one kv_rank, object group 0)."""
        return sum(g.nbytes for g in self.groups)

    @property
    def cache_size_per_token(self) -> int:
        """Object bytes per token."""
        return self.object_bytes // self.chunk_size


def build_layout(
    tensors: Sequence[TensorSpec],
    hints: Mapping[str, object],
    engine_groups: Sequence[EngineGroup],
    chunk_size: int,
    cpu_only: bool = True,
) -> RegisteredLayout:
    """Partition the registered layers into kernel groups and compute the object layout.

    Raises:
        LayoutError: Unsupported shapes, layers missing from or repeated in the groups, or a chunk size
            that is not a multiple of a group's tokens per block.
    """
    if not tensors:
        raise LayoutError("no KV tensors registered")
    hint = hints.get("kv_layout")
    geoms = [detect_layer(t, hint if isinstance(hint, str) else None, cpu_only) for t in tensors]
    groups = list(engine_groups) or [EngineGroup(0, tuple(range(len(tensors))))]
    seen: dict[int, int] = {}
    for g_index, group in enumerate(groups):
        for layer in group.layer_indices:
            if not 0 <= layer < len(tensors):
                raise LayoutError(f"engine group {g_index} names layer {layer}; {len(tensors)} registered")
            if layer in seen:
                raise LayoutError(f"layer {layer} appears in engine groups {seen[layer]} and {g_index}")
            seen[layer] = g_index
    if len(seen) != len(tensors):
        missing = sorted(set(range(len(tensors))) - set(seen))
        raise LayoutError(f"layers {missing} are in no engine group")
    kernel: list[tuple[int, LayerGeometry, list[int]]] = []
    for layer in sorted(seen):
        g_index, geom = seen[layer], geoms[layer]
        for entry in kernel:
            if entry[0] == g_index and entry[1] == geom:
                entry[2].append(layer)
                break
        else:
            kernel.append((g_index, geom, [layer]))
    out: list[KernelGroup] = []
    offset = 0
    for index, (g_index, geom, layers) in enumerate(kernel):
        tpb = groups[g_index].tokens_per_block or geom.block_size
        if chunk_size % tpb:
            raise LayoutError(f"chunk size {chunk_size} is not a multiple of {tpb} tokens per block")
        bpc = chunk_size // tpb
        kgroup = KernelGroup(index, g_index, tuple(layers), geom, bpc, bpc * geom.block_size, offset)
        offset += kgroup.nbytes
        out.append(kgroup)
    return RegisteredLayout(chunk_size, tuple(out), len(tensors), len(groups))


@dataclass(frozen=True, slots=True)
class EngineDrivenLayout:
    """The object layout of an engine-driven registration (§5.11): one `[P, layers, slots, hidden]` tensor."""

    num_layers: int
    slots: int
    hidden: int
    dtype: str
    use_mla: bool

    @property
    def shape(self) -> list[int]:
        """The chunk tensor's shape as the client views a slot."""
        if self.use_mla:
            return [self.num_layers, self.slots, self.hidden]
        return [2, self.num_layers, self.slots, self.hidden]

    @property
    def object_bytes(self) -> int:
        """Bytes of one chunk object."""
        planes = 1 if self.use_mla else 2
        return planes * self.num_layers * self.slots * self.hidden * dtype_itemsize(self.dtype)
