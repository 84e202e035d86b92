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

import torch

__all__ = ("FP8_FLAVOURS", "mscale", "rotate_window", "rotation_factors", "strip_mscale")

FP8_FLAVOURS: dict[str, torch.dtype] = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
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


def _pairs(t: torch.Tensor, neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if neox:
        half = t.shape[-1] // 2
        return t[..., :half], t[..., half:]
    return t[..., 0::2], t[..., 1::2]


def rotate_window(
    src: torch.Tensor,
    dst: torch.Tensor,
    cos_d: torch.Tensor,
    sin_d: torch.Tensor,
    neox: bool,
    fp8: torch.dtype | None = None,
) -> None:
    """Write the re-rotated `src` into `dst` (same shape `[tokens, heads, rot_dim]`, may be views).

    Args:
        src: The rotary window of K as stored (float, float8, or uint8 holding `fp8`).
        dst: Where the result goes, same dtype as `src`.
        cos_d: `[tokens, rot_dim / 2]` factors from `rotation_factors`.
        sin_d: Same shape.
        neox: NeoX halves (True) or GPT-J neighbours (False).
        fp8: The float8 dtype a uint8 `src` encodes, else None.
    """
    if fp8 is not None:
        src = src.view(fp8)
    work = src.float()
    x, y = _pairs(work, neox)
    c = cos_d.unsqueeze(1)
    s = sin_d.unsqueeze(1)
    out = torch.empty_like(work)
    ox, oy = _pairs(out, neox)
    torch.mul(x, c, out=ox)
    ox.addcmul_(y, s, value=-1.0)
    torch.mul(y, c, out=oy)
    oy.addcmul_(x, s)
    if fp8 is not None:
        dst.copy_(out.to(fp8).view(dst.dtype))
    else:
        dst.copy_(out)
