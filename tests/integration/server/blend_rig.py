"""Helpers of the CacheBlend tests over a real server: the live recipe of cacheblend.md §8.

`lmcache server --engine-type blend --chunk-size 16`, a CPU engine of 2 layers `[2, 64, 16, 2, 8]` fp16
(NHD, one engine group of 16-token blocks) registered over SHM as instance 1000, keys with one reader.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import torch
import zmq

from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.blend_client import BlendClient
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo

if TYPE_CHECKING:
    from lmcache.adapters.transport.client import LMCacheClient

CS = 16
SHAPE = (2, 64, 16, 2, 8)
S = list(range(1000, 1048))  # the V5 store: 3 chunks
H1 = "92c37fafcb764ce636becd01f02c32c94f7da6936c919def00a0791b6f84adea"
H2 = "2426273ec5b3ea5a8628a481c8bc0d94910726f776c6cc541e9c8cddced82e1a"
V5_QUERIES = [
    ([7] * 5 + S[16:48] + [8] * 3, 0, [(16, 5, H1), (32, 21, H2)]),
    (S[0:32] + [9] * 4 + S[32:48], 32, [(32, 36, H2)]),
    (S[0:16] + [5] * 3 + S[0:16], 16, []),
]
_enc = msgspec.msgpack.Encoder()


def bkey(tokens: list[int], rid: str, worker: int | None = None, salt: str = "") -> CacheKey:
    """A blend request key (scheduler keys have worker None)."""
    return CacheKey("m", 1, worker, tokens, 0, len(tokens), rid, salt, None, 1)


def cos_sin_cache(positions: int = 128, rot_dim: int = 8, base: float = 10000.0) -> torch.Tensor:
    """VLLM's `cos_sin_cache` layout, `[positions, rot_dim]` = `[cos | sin]`, fp16."""
    inv = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1).half()


def rerotate(k: torch.Tensor, old: int, new: int, cache: torch.Tensor, neox: bool = True) -> torch.Tensor:
    """Reference: K rows `[tokens, heads, hs]` moved from `old + j` to `new + j` (fp64 math)."""
    half = cache.shape[1] // 2
    c = cache.double()
    j = torch.arange(k.shape[0])
    co, so = c[old + j, :half][:, None], c[old + j, half:][:, None]
    cn, sn = c[new + j, :half][:, None], c[new + j, half:][:, None]
    cd, sd = cn * co + sn * so, sn * co - cn * so
    out = k.double().clone()
    if neox:
        x, y = out[..., :half].clone(), out[..., half:].clone()
        out[..., :half], out[..., half:] = x * cd - y * sd, y * cd + x * sd
    else:
        x, y = out[..., 0::2].clone(), out[..., 1::2].clone()
        out[..., 0::2], out[..., 1::2] = x * cd - y * sd, y * cd + x * sd
    return out


class BlendEngine:
    """A fake CPU engine with KV in SHM, registered as `instance_id`, plus its cos/sin cache segment."""

    def __init__(
        self, client: LMCacheClient, instance_id: int = 1000, seed: int = 0, zeros: bool = False
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.client = client
        self.blend = BlendClient(client)
        self.instance_id = instance_id
        make = (lambda: torch.zeros(SHAPE)) if zeros else (lambda: torch.randn(SHAPE, generator=gen))
        self.layers = [SharedKVTensor(make().half()) for _ in range(2)]
        self.cache = SharedKVTensor(cos_sin_cache())

    def register(self) -> None:
        descriptors = [t.descriptor for t in self.layers]
        groups = [EngineGroupInfo(0, (0, 1), 16)]
        self.client.register_kv_cache(
            self.instance_id, descriptors, "m", 1, "vllm", {"kv_layout": "NHD"}, groups
        )

    def register_rope(self, **overrides: Any) -> None:
        args: dict[str, Any] = {"head_size": 8, "is_neox_style": True}
        args.update(overrides)
        self.blend.cb_register_rope(self.instance_id, [self.cache.descriptor], **args)

    def snapshot(self) -> list[torch.Tensor]:
        return [t.tensor.clone() for t in self.layers]

    def close(self) -> None:
        for t in [*self.layers, self.cache]:
            t.close()


class RawDealer:
    """A bare DEALER socket: frames in, frames out, for byte-exact checks."""

    def __init__(self, url: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)

    def ask(self, *frames: bytes, timeout_s: float = 5.0) -> list[bytes]:
        self.sock.send_multipart(list(frames))
        if not self.sock.poll(int(timeout_s * 1000)):
            raise TimeoutError("no reply")
        return list(self.sock.recv_multipart())

    def call(self, op: int | str, *payloads: Any) -> list[bytes]:
        return self.ask(_enc.encode(1), _enc.encode(op), *(_enc.encode(p) for p in payloads))

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def wait_for(predicate: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return value
