"""Re-RoPE on CPU with torch (cacheblend.md §4.3): move K from position `po` to `pn`, vectorised.

Undoing the rotation at `po` and applying the one at `pn` is one rotation by `theta(pn) - theta(po)`:
`cos_d = cn*co + sn*so`, `sin_d = sn*co - cn*so`, then `x' = x*cos_d - y*sin_d`, `y' = y*cos_d + x*sin_d`
for each pair `(x, y)`: the two halves of the rotary window (NeoX) or neighbours `(2i, 2i+1)` (GPT-J).
The factors are computed once per chunk from the engine's `cos_sin_cache` rows (`[cos | sin]`, fp32),
shared by every layer and head. Math is fp32 and rounds once to K's dtype (LMCache's CUDA kernel works
in the cache dtype); uint8 K under `kv_quant` is decoded from fp8 first and encoded back (no scale: a
rotation commutes with a per-tensor scale).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
else:
    from lmcache.adapters.lazy_torch import torch

__all__ = (
    "FP8_FLAVOURS",
    "WindowRotator",
    "fp8_dtype",
    "mscale",
    "rotate_window",
    "rotation_factors",
    "strip_mscale",
)

FP8_FLAVOURS: dict[str, str] = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}  # torch dtype names


def fp8_dtype(flavour: str) -> torch.dtype | None:
    """The torch dtype of a `kv_quant` fp8 flavour; None for an unknown one."""
    name = FP8_FLAVOURS.get(flavour)
    return None if name is None else getattr(torch, name)


_MSCALE_TOLERANCE = 1e-3


def mscale(cache: torch.Tensor) -> float:
    """`sqrt(mean(cos^2 + sin^2))` of a `[max_position, rot_dim]` cache, in fp32 (1 for plain RoPE)."""
    half = cache.shape[1] // 2
    c = cache[:, :half].float()
    s = cache[:, half:].float()
    return float(torch.sqrt((c * c + s * s).mean()))


def strip_mscale(cache: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The cache over its mscale (a private copy, cast back) when YaRN/longrope scaled it, else itself."""
    m = mscale(cache)
    if abs(m - 1.0) < _MSCALE_TOLERANCE or m == 0.0:
        return cache, m
    return (cache.float() / m).to(cache.dtype), m


def rotation_factors(
    cache: torch.Tensor, old_pos: torch.Tensor, new_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(cos_d, sin_d)`, fp32 `[n, rot_dim / 2]`, rotating each token from `old_pos[i]` to `new_pos[i]`."""
    half = cache.shape[1] // 2
    old = cache.index_select(0, old_pos).float()
    new = cache.index_select(0, new_pos).float()
    co, so = old[:, :half], old[:, half:]
    cn, sn = new[:, :half], new[:, half:]
    return cn * co + sn * so, sn * co - cn * so


class WindowRotator:
    """Re-rotates `[tokens, heads, rot_dim]` windows in two preallocated fp32 buffers.

    Reusing the buffers keeps the math in cache: a fresh 1 MiB tensor per layer page-faults and costs
    more than the arithmetic. NeoX takes three ops on a `[tokens, heads, 2, half]` view (one full
    multiply by cos, two half-width multiply-adds by sin); GPT-J's neighbours are complex numbers, so it
    is one complex multiply. Not thread-safe: one per scatter and shape.

    Args:
        shape: `(tokens, heads, rot_dim)`.
        neox: NeoX halves (True) or GPT-J neighbours (False).
    """

    def __init__(self, shape: tuple[int, ...], neox: bool) -> None:
        tokens, heads, rot = shape
        self.shape, self.neox, self.half = tuple(shape), neox, rot // 2
        self.work = torch.empty(shape)
        self.out = torch.empty(shape)
        if neox:
            self._w4 = self.work.view(tokens, heads, 2, self.half)
            self._o4 = self.out.view(tokens, heads, 2, self.half)
        else:
            self._wz = torch.view_as_complex(self.work.view(tokens, heads, self.half, 2))
            self._oz = torch.view_as_complex(self.out.view(tokens, heads, self.half, 2))

    def prepare(self, cos_d: torch.Tensor, sin_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors shaped for this rotator (computed once per chunk, shared by every layer)."""
        tokens = cos_d.shape[0]
        if self.neox:
            return cos_d.reshape(tokens, 1, 1, self.half), sin_d.reshape(tokens, 1, self.half)
        turn = torch.complex(cos_d.contiguous(), sin_d.contiguous()).reshape(tokens, 1, self.half)
        return turn, turn

    def rotate(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        factors: tuple[torch.Tensor, torch.Tensor],
        fp8: torch.dtype | None = None,
    ) -> None:
        """Write `src` re-rotated into `dst` (same shape as the rotator, any strides, same dtype)."""
        if fp8 is not None:  # uint8 holding fp8: decode and encode through the float8 dtype
            src, dst = src.view(fp8), dst.view(fp8)
        self.work.copy_(src)
        if self.neox:
            c, s = factors
            torch.mul(self._w4, c, out=self._o4)
            self._o4[:, :, 0].addcmul_(self._w4[:, :, 1], s, value=-1.0)
            self._o4[:, :, 1].addcmul_(self._w4[:, :, 0], s)
        else:
            torch.mul(self._wz, factors[0], out=self._oz)
        dst.copy_(self.out)


def rotate_window(
    src: torch.Tensor,
    dst: torch.Tensor,
    cos_d: torch.Tensor,
    sin_d: torch.Tensor,
    neox: bool,
    fp8: torch.dtype | None = None,
) -> None:
    """One-off `WindowRotator` call: `dst` = `src` (`[tokens, heads, rot_dim]`) moved by the factors.

    Args:
        src: The rotary window of K as stored (float, float8, or uint8 holding `fp8`).
        dst: Where the result goes, same dtype as `src`.
        cos_d: `[tokens, rot_dim / 2]` factors from `rotation_factors`.
        sin_d: Same shape.
        neox: NeoX halves (True) or GPT-J neighbours (False).
        fp8: The float8 dtype a uint8 `src` encodes, else None.
    """
    rotator = WindowRotator(tuple(src.shape), neox)
    rotator.rotate(src, dst, rotator.prepare(cos_d, sin_d), fp8)
