"""KV for benchmarks, computed by the random-weight Llama of the vLLM end-to-end model, in plain torch.

`tests/e2e_vllm/make_model.py` writes that model for vLLM (transformers' `LlamaForCausalLM`, weights
drawn from N(0, init_std), RMSNorm weights 1, bfloat16), and vLLM caches each layer's keys after RoPE and
its values. Building vLLM takes far longer than a benchmark should, so this module runs the same
architecture directly: embedding, then per layer RMSNorm, q/k/v projections, rotary embedding (rotate
half, theta 10000), causal attention, output projection, RMSNorm and the SiLU-gated MLP. The weights come
from the same distribution with a fixed seed, not bit for bit the files make_model.py writes (the draw
order differs), so the numbers are the same kind of KV, not the same values.

Objects are laid out as the server's L1 objects of an NHD registration: per chunk of 256 tokens,
`[2 (K, V), layers, 256 slots, heads x head_dim]` in bfloat16. Models: `bench` is benchmarks/vllm_e2e.py's
default (hidden 1024, 8 layers, 16 heads of 64), `test` is tests/e2e_vllm's (hidden 128, 2 layers, 2 heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ("MODELS", "KvModel", "kv_objects")

CHUNK = 256


@dataclass(frozen=True)
class KvModel:
    """Sizes of a random-weight Llama."""

    hidden: int
    layers: int
    heads: int
    vocab: int = 512
    init_std: float = 0.2
    rope_theta: float = 10000.0
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        """Width of one head."""
        return self.hidden // self.heads

    @property
    def object_bytes(self) -> int:
        """Bytes of one chunk's KV object."""
        return 2 * self.layers * CHUNK * self.hidden * 2


MODELS = {"bench": KvModel(hidden=1024, layers=8, heads=16), "test": KvModel(hidden=128, layers=2, heads=2)}


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding of `[tokens, heads, head_dim]` at positions 0.. (Llama's rotate-half form)."""
    tokens, _, dim = x.shape
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(tokens, dtype=torch.float32), inv)
    cos = torch.cat([angles.cos(), angles.cos()], -1)[:, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[:, None, :]
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _weights(model: KvModel, gen: torch.Generator) -> dict[str, torch.Tensor]:
    h, std = model.hidden, model.init_std

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    out = {"embed": normal(model.vocab, h)}
    for i in range(model.layers):
        for name, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("o", (h, h))):
            out[f"{i}.{name}"] = normal(*shape)
        out[f"{i}.gate"], out[f"{i}.up"], out[f"{i}.down"] = (
            normal(2 * h, h),
            normal(2 * h, h),
            normal(h, 2 * h),
        )
    return out


def _prompt_kv(model: KvModel, w: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """`[2, layers, tokens, hidden]` bfloat16 KV of one prompt (post-RoPE keys, values)."""
    n, heads, dim = tokens.numel(), model.heads, model.head_dim
    h = w["embed"][tokens]
    mask = torch.full((n, n), float("-inf")).triu(1)
    kv = torch.empty(2, model.layers, n, model.hidden)
    for i in range(model.layers):
        x = _rms(h, model.eps)
        q = _rope((x @ w[f"{i}.q"].T).view(n, heads, dim), model.rope_theta)
        k = _rope((x @ w[f"{i}.k"].T).view(n, heads, dim), model.rope_theta)
        v = (x @ w[f"{i}.v"].T).view(n, heads, dim)
        kv[0, i], kv[1, i] = k.reshape(n, -1), v.reshape(n, -1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(dim) + mask
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1)
        h = h + attn @ w[f"{i}.o"].T
        x = _rms(h, model.eps)
        h = h + (torch.nn.functional.silu(x @ w[f"{i}.gate"].T) * (x @ w[f"{i}.up"].T)) @ w[f"{i}.down"].T
    return kv.to(torch.bfloat16)


def kv_objects(count: int, size: int, model: KvModel | str = "bench", seed: int = 0) -> list[bytearray]:
    """`count` objects of `size` bytes cut from the KV of successive random prompts, chunk by chunk.

    Each prompt is one chunk (256 tokens) laid out as an L1 object; objects of another size are cut from
    the stream of those objects (so a 4 MiB object of the `bench` model is the keys or the values of a
    chunk). Takes a few seconds per MiB-sized chunk of the `bench` model on a laptop core.
    """
    spec = MODELS[model] if isinstance(model, str) else model
    gen = torch.Generator().manual_seed(seed)
    weights = _weights(spec, gen)
    need = count * size
    stream = bytearray()
    while len(stream) < need:
        tokens = torch.randint(3, spec.vocab, (CHUNK,), generator=gen)
        chunk = _prompt_kv(spec, weights, tokens)
        stream += chunk.contiguous().view(torch.uint8).numpy().tobytes()
    return [stream[i * size : (i + 1) * size] for i in range(count)]
