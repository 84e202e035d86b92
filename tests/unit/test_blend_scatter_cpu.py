"""Re-RoPE and the per-token scatter on CPU (cacheblend.md §4.2-4.3, §8 "RoPE math on CPU").

A chunk is stored at `old_st` as real RoPE'd K (`rope(k_raw, position)`) plus random V, then scattered
to `cur_st`: the engine must hold V bit for bit and K equal to `rope(k_raw, cur_st + j)` within the
dtype's tolerance; every other slot stays as it was. Covered: NeoX and GPT-J, partial rotary, NHD, HND,
blocks-first, fused K/V, MLA window, fp16/bf16/fp32, fp8 (uint8 + kv_quant and torch float8), mscale.
"""

from __future__ import annotations

import math

import pytest
import torch

from lmcache.adapters.transfer.blend_scatter import CpuBlendScatter
from lmcache.adapters.transfer.rope_math import mscale, rotate_window, rotation_factors, strip_mscale
from lmcache.domain.arena import Extent
from lmcache.domain.blend_rope import CacheShape, RopeError, RopeSpec, plan_rotation
from lmcache.domain.kv_layout import EngineGroup, TensorSpec, build_layout
from lmcache.ports.blend import ScatterItem

CS, BS, NB = 16, 4, 32
GEN = torch.Generator().manual_seed(3)


def cos_sin_cache(
    rot_dim: int, positions: int = 256, base: float = 10000.0, scale: float = 1.0
) -> torch.Tensor:
    """The cos_sin_cache vLLM builds: `[positions, rot_dim]`, `[cos | sin]` of `p * base^(-2i/rot_dim)`."""
    inv = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv[None, :]
    return (torch.cat([angles.cos(), angles.sin()], dim=1) * scale).float()


def rope(
    x: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor, neox: bool, offset: int = 0
) -> torch.Tensor:
    """Reference RoPE of `x` `[tokens, heads, width]` at `positions`, window `[offset, offset+rot)` (fp64)."""
    rot = cache.shape[1]
    half = rot // 2
    cos = cache[positions, :half].double()[:, None, :]
    sin = cache[positions, half:].double()[:, None, :]
    out = x.double().clone()
    win = out[..., offset : offset + rot]
    if neox:
        a, b = win[..., :half].clone(), win[..., half:].clone()
        win[..., :half], win[..., half:] = a * cos - b * sin, b * cos + a * sin
    else:
        a, b = win[..., 0::2].clone(), win[..., 1::2].clone()
        win[..., 0::2], win[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def test_the_cacheblend_md_vector() -> None:
    cache = cos_sin_cache(4, 8)
    assert torch.allclose(cache[1], torch.tensor([0.5403023, 0.99995, 0.841471, 0.0099998]), atol=1e-6)
    for neox, want in (
        (True, [-3.144039, 1.919605, -0.339143, 4.039197]),
        (False, [-2.234742, 0.077004, 2.919405, 4.059196]),
    ):
        k = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
        out = torch.empty_like(k)
        rotate_window(k, out, *rotation_factors(cache, torch.tensor([1]), torch.tensor([3])), neox)
        assert torch.allclose(out.flatten(), torch.tensor(want), atol=1e-5)


@pytest.mark.parametrize("neox", [True, False])
def test_rerotating_equals_rotating_directly(neox: bool) -> None:
    cache = cos_sin_cache(64, 512)
    raw = torch.randn(CS, 4, 64, generator=GEN)
    old, new = torch.arange(40, 40 + CS), torch.arange(300, 300 + CS)
    stored = rope(raw, old, cache, neox).float()
    out = torch.empty_like(stored)
    rotate_window(stored, out, *rotation_factors(cache, old, new), neox)
    assert torch.allclose(out.double(), rope(raw, new, cache, neox), atol=1e-5)


def test_mscale_strip() -> None:
    plain = cos_sin_cache(16)
    scaled = cos_sin_cache(16, scale=1.2)
    assert math.isclose(mscale(plain), 1.0, abs_tol=1e-6) and math.isclose(mscale(scaled), 1.2, rel_tol=1e-5)
    same, m = strip_mscale(plain)
    assert same is plain and math.isclose(m, 1.0, abs_tol=1e-6)
    stripped, m = strip_mscale(scaled)
    assert math.isclose(m, 1.2, rel_tol=1e-5) and torch.allclose(stripped, plain, atol=1e-6)


# ---------------------------------------------------------------- scatter
class Rig:
    """One registration: engine layers, an arena with one stored chunk, and the scatter under test."""

    def __init__(
        self,
        shape: tuple[int, ...],
        kv_layout: str,
        dtype: torch.dtype,
        spec: RopeSpec,
        caches: list[torch.Tensor],
    ) -> None:
        self.layers = [torch.randn(shape, generator=GEN).to(dtype) for _ in range(2)]
        tspec = TensorSpec(str(dtype).removeprefix("torch."), shape, tuple(self.layers[0].stride()))
        self.layout = build_layout([tspec, tspec], {"kv_layout": kv_layout}, [EngineGroup(0, (0, 1), BS)], CS)
        self.plan = plan_rotation(spec, self.layout, [0])
        size = self.layout.object_bytes
        self.arena = torch.zeros(2 * size, dtype=torch.uint8)
        self.extent = Extent(size, size)
        self.caches = caches
        self.scatter = CpuBlendScatter(self.layout, self.layers, self.arena, self.plan, caches, {})
        group = self.layout.groups[0]
        self.obj = self.arena.narrow(0, size, size).view(dtype).view(group.shape)

    def before(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.layers]


def _slots(table: list[int], cur: int) -> list[tuple[int, int]]:
    return [(table[(cur + j) // BS], (cur + j) % BS) for j in range(CS)]


def _token_rows(layer: torch.Tensor, fmt: str, plane: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    rows = []
    for blk, slot in pairs:
        if fmt == "kv_first_nhd":
            rows.append(layer[plane, blk, slot].reshape(-1))
        elif fmt == "kv_first_hnd":
            rows.append(layer[plane, blk, :, slot].reshape(-1))
        elif fmt == "blocks_first_nhd":
            rows.append(layer[blk, plane, slot].reshape(-1))
        else:  # single plane: MLA [NB, BS, W] or fused [NB, BS, NH, 2HS]
            rows.append(layer[blk, slot].reshape(-1))
    return torch.stack(rows)


LAYOUTS = {
    "kv_first_nhd": ((2, NB, BS, 2, 32), "NHD"),
    "kv_first_hnd": ((2, NB, 2, BS, 32), "HND"),
    "blocks_first_nhd": ((NB, 2, BS, 2, 32), "NHD"),
}


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_shifted_chunk_lands_rotated_with_v_exact(fmt: str, neox: bool, dtype: torch.dtype) -> None:
    shape, hint = LAYOUTS[fmt]
    cache = cos_sin_cache(16, 256)  # partial rotary: 16 of 32 head elements
    spec = RopeSpec(32, neox, (), (), (), "", (CacheShape(256, 16, "float32"),))
    rig = Rig(shape, hint, dtype, spec, [cache])
    old, cur = 32, 45  # cur_st not block-aligned
    raw_k = torch.randn(2, CS, 2, 32, generator=GEN)
    for layer in range(2):
        rig.obj[0, layer] = (
            rope(raw_k[layer], torch.arange(old, old + CS), cache, neox).reshape(CS, -1).to(dtype)
        )
    rig.obj[1] = torch.randn(2, CS, 64, generator=GEN).to(dtype)
    before = rig.before()
    table = list(range(3, 3 + 20))
    items = [ScatterItem(rig.extent, old, cur)]
    rig.scatter.check(items, [table])
    stats = rig.scatter.scatter(items, [table])
    assert (
        stats.bytes_written == rig.layout.object_bytes and stats.bytes_rotated == rig.layout.object_bytes // 2
    )
    pairs = _slots(table, cur)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
    for layer in range(2):
        got_v = _token_rows(rig.layers[layer], fmt, 1, pairs)
        assert torch.equal(got_v, rig.obj[1, layer])
        want_k = rope(raw_k[layer], torch.arange(cur, cur + CS), cache, neox).reshape(CS, -1)
        got_k = _token_rows(rig.layers[layer], fmt, 0, pairs).double()
        assert torch.allclose(got_k, want_k, atol=tol, rtol=tol)
        assert torch.equal(
            got_k[:, :, None].reshape(CS, 2, 32)[..., 16:].to(dtype),
            rig.obj[0, layer].view(CS, 2, 32)[..., 16:],
        )
    # every slot outside [cur, cur+CS) is untouched
    touched = set(pairs)
    for layer in range(2):
        for blk in range(NB):
            for slot in range(BS):
                if (blk, slot) in touched:
                    continue
                for plane in (0, 1):
                    a = _token_rows(rig.layers[layer], fmt, plane, [(blk, slot)])
                    b = _token_rows(before[layer], fmt, plane, [(blk, slot)])
                    assert torch.equal(a, b)


def test_unshifted_and_nope_groups_are_copied_bit_for_bit() -> None:
    shape, hint = LAYOUTS["kv_first_nhd"]
    for spec, old in (
        (RopeSpec(32, True, (), (), (), "", (CacheShape(256, 32, "float32"),)), 16),  # same position
        (RopeSpec(32, True, (), (), (), "", ()), 0),  # NoPE
        (RopeSpec(32, True, (-1,), (), (), "", (CacheShape(256, 32, "float32"),)), 0),  # cache -1
        (RopeSpec(32, True, (), ((),), (), "", (CacheShape(256, 32, "float32"),)), 0),  # [] rotation
    ):
        rig = Rig(shape, hint, torch.float16, spec, [cos_sin_cache(32)] if spec.caches else [])
        rig.obj.copy_(torch.randn(rig.obj.shape, generator=GEN).half())
        table = list(range(10, 18))
        stats = rig.scatter.scatter([ScatterItem(rig.extent, old, 16)], [table])
        assert stats.bytes_rotated == 0
        pairs = _slots(table, 16)
        for layer in range(2):
            for plane in (0, 1):
                assert torch.equal(
                    _token_rows(rig.layers[layer], "kv_first_nhd", plane, pairs), rig.obj[plane, layer]
                )


def test_fused_kv_rotates_only_the_k_half_of_each_head() -> None:
    cache = cos_sin_cache(16)
    spec = RopeSpec(16, True, (), (), (), "", (CacheShape(256, 16, "float32"),))
    rig = Rig((NB, BS, 2, 32), "NHD", torch.float32, spec, [cache])  # 2 heads of [K 16 | V 16]
    raw = torch.randn(2, CS, 2, 32, generator=GEN)
    for layer in range(2):
        stored = raw[layer].clone()
        stored[..., :16] = rope(raw[layer][..., :16], torch.arange(0, CS), cache, True).float()
        rig.obj[0, layer] = stored.reshape(CS, -1)
    table = list(range(12))
    rig.scatter.scatter([ScatterItem(rig.extent, 0, 20)], [table])
    pairs = _slots(table, 20)
    for layer in range(2):
        got = _token_rows(rig.layers[layer], "fused", 0, pairs).view(CS, 2, 32)
        want_k = rope(raw[layer][..., :16], torch.arange(20, 20 + CS), cache, True)
        assert torch.allclose(got[..., :16].double(), want_k, atol=1e-5)
        assert torch.equal(got[..., 16:], raw[layer][..., 16:])  # V halves exact


def test_mla_rotates_only_the_declared_window() -> None:
    cache = cos_sin_cache(8)
    spec = RopeSpec(40, False, (), ((32, 8),), (), "", (CacheShape(256, 8, "float32"),))
    rig = Rig((NB, BS, 40), "NHD", torch.float32, spec, [cache])  # 32 latent + 8 rope
    raw = torch.randn(2, CS, 1, 40, generator=GEN)
    for layer in range(2):
        rig.obj[0, layer] = (
            rope(raw[layer], torch.arange(5, 5 + CS), cache, False, offset=32).float().view(CS, 40)
        )
    table = list(range(8))
    rig.scatter.scatter([ScatterItem(rig.extent, 5, 9)], [table])
    for layer in range(2):
        got = _token_rows(rig.layers[layer], "mla", 0, _slots(table, 9)).view(CS, 1, 40)
        want = rope(raw[layer], torch.arange(9, 9 + CS), cache, False, offset=32)
        assert torch.equal(got[..., :32], raw[layer][..., :32])
        assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("flavour", ["fp8_e4m3", "fp8_e5m2", "native"])
def test_fp8_k_is_decoded_rotated_and_encoded(flavour: str) -> None:
    cache = cos_sin_cache(32)
    fp8 = torch.float8_e5m2 if flavour == "fp8_e5m2" else torch.float8_e4m3fn
    store_dtype = fp8 if flavour == "native" else torch.uint8
    kv_quant = "" if flavour == "native" else flavour
    spec = RopeSpec(32, True, (), (), (), kv_quant, (CacheShape(256, 32, "float32"),))
    shape, hint = LAYOUTS["kv_first_nhd"]
    rig = Rig(shape, hint, store_dtype, spec, [cache])
    raw = torch.randn(2, CS, 2, 32, generator=GEN)
    for layer in range(2):
        k = rope(raw[layer], torch.arange(0, CS), cache, True).float().to(fp8).reshape(CS, -1)
        rig.obj[0, layer] = k if flavour == "native" else k.view(torch.uint8)
    table = list(range(8))
    stats = rig.scatter.scatter([ScatterItem(rig.extent, 0, 12)], [table])
    assert stats.bytes_rotated > 0
    for layer in range(2):
        got = _token_rows(rig.layers[layer], "kv_first_nhd", 0, _slots(table, 12))
        decoded = (got if flavour == "native" else got.view(fp8)).double()
        want = rope(raw[layer], torch.arange(12, 12 + CS), cache, True).reshape(CS, -1)
        assert torch.allclose(decoded, want, atol=0.3, rtol=0.15)


def test_an_unquantised_uint8_cache_is_copied_not_rotated() -> None:
    spec = RopeSpec(32, True, (), (), (), "", (CacheShape(256, 32, "float32"),))
    shape, hint = LAYOUTS["kv_first_nhd"]
    rig = Rig(shape, hint, torch.uint8, spec, [cos_sin_cache(32)])
    assert rig.scatter.scatter([ScatterItem(rig.extent, 0, 12)], [list(range(8))]).bytes_rotated == 0


def test_checks_refuse_before_writing() -> None:
    cache = cos_sin_cache(16, 64)
    spec = RopeSpec(32, True, (), (), (), "", (CacheShape(64, 16, "float32"),))
    shape, hint = LAYOUTS["kv_first_nhd"]
    rig = Rig(shape, hint, torch.float16, spec, [cache])
    before = rig.before()
    with pytest.raises(ValueError, match="beyond the cos/sin cache"):
        rig.scatter.check([ScatterItem(rig.extent, 0, 60)], [list(range(20))])
    with pytest.raises(ValueError, match="block id"):
        rig.scatter.check([ScatterItem(rig.extent, 0, 4)], [[0, 1, NB, 3, 4]])
    with pytest.raises(ValueError, match="block table ends"):
        rig.scatter.check([ScatterItem(rig.extent, 0, 4)], [[0, 1]])
    rig.scatter.check([ScatterItem(rig.extent, 60, 60)], [list(range(20))])  # unshifted: no cache needed
    assert all(torch.equal(a, b) for a, b in zip(before, rig.layers, strict=True))


def test_plan_validation_names_the_bad_value() -> None:
    shape, hint = LAYOUTS["kv_first_nhd"]
    spec_ok = RopeSpec(32, True, (), (), (), "", (CacheShape(256, 16, "float32"),))
    rig = Rig(shape, hint, torch.float16, spec_ok, [cos_sin_cache(16)])
    cases = [
        (RopeSpec(32, True, (), (), (), "int4", ()), "kv_quant"),
        (RopeSpec(32, True, (1,), (), (), "", (CacheShape(256, 16, "float32"),)), "group_to_cache values"),
        (RopeSpec(32, True, (), ((1,),), (), "", (CacheShape(256, 16, "float32"),)), "group_rot entry"),
        (RopeSpec(32, True, (), ((0, 8),), (), "", (CacheShape(256, 16, "float32"),)), "rotary width"),
        (RopeSpec(32, True, (), ((8, 16),), (), "", (CacheShape(256, 16, "float32"),)), "MLA window"),
        (RopeSpec(24, True, (), (), (), "", (CacheShape(256, 16, "float32"),)), "not a multiple"),
        (RopeSpec(8, True, (), (), (), "", (CacheShape(256, 16, "float32"),)), "exceeds the head size"),
        (RopeSpec(32, True, (), (), (), "", (CacheShape(256, 15, "float32"),)), "shape"),
    ]
    for spec, message in cases:
        with pytest.raises(RopeError, match=message):
            plan_rotation(spec, rig.layout, [0])
    with pytest.raises(RopeError, match="engine groups"):
        plan_rotation(RopeSpec(32, True, (0,), (), (), "", spec_ok.caches), rig.layout, [0, 1])
