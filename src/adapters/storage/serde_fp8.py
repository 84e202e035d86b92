"""fp8 serde stage: 16-bit float KV stored as 8-bit floats with one fp32 scale per 128 values (lossy).

Each run of 128 consecutive values (for NHD objects: one token's head, or half of one) is scaled by
s = A / FMAX, A its largest magnitude, and rounded to `fp8_dtype` (torch's round-to-nearest-even); a load
multiplies back (fp8 values read through a table) and rounds to the source dtype. Stored bytes:
16 + 4 * ceil(n / 128) + n for n values, 0.516x of the fp16/bf16 object. All of it is torch and numpy on
whole arrays, on the serde pool.

Error bound (documented contract, checked by tests/unit/test_serde_stages.py on KV-like data): for a value
x in a run with largest magnitude A,

    |x' - x| <= (2^-(m+1) + 2^-p) * |x| + A * e_abs  (+ the source dtype's smallest subnormal)

with m the fp8 mantissa bits (e4m3fn: 3, e5m2: 2), p the source's (float16: 10, bfloat16: 7), and e_abs =
half the fp8 subnormal spacing over FMAX, rounded up: 2^-18 for e4m3fn (FMAX 448), 2^-32 for e5m2
(FMAX 57344). So about 6.3% relative for e4m3fn and 12.5% for e5m2 at worst, much less on average
(`benchmarks/l2.py --serde` prints the measured mean and max on KV from the e2e model).

The source dtype is `source_dtype`, or with `auto` the dtype of the layouts registered for the key's
model (the server passes a resolver). An object whose dtype is not known or not fp16/bf16, whose size is
odd, or which holds NaN or infinity is not stored by this adapter (the store fails for that key and is
counted; L1 and other tiers keep it): quantizing it would corrupt it.

Stage header (16 bytes): `"F8"` | version u8 | fp8 code u8 | source code u8 | log2 run u8 | reserved u16 |
values u64; then the scales (fp32), then the fp8 bytes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
import torch

from lmcache.adapters.storage.serde_base import Alloc, SerdeError, SerdeMismatchError, fresh

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.keys import ObjectKey

__all__ = ("FP8_FORMATS", "GROUP", "SOURCE_DTYPES", "Fp8Serde")

_HEADER = struct.Struct("<2sBBBBHQ")
_MAGIC = b"F8"
_VERSION = 1
GROUP = 128
_LOG2_GROUP = 7
# name -> (code, torch dtype, largest finite value, mantissa bits, e_abs)
FP8_FORMATS: dict[str, tuple[int, torch.dtype, float, int, float]] = {
    "float8_e4m3fn": (1, torch.float8_e4m3fn, 448.0, 3, 2.0**-18),
    "float8_e5m2": (2, torch.float8_e5m2, 57344.0, 2, 2.0**-32),
}
# name -> (code, torch dtype, mantissa bits)
SOURCE_DTYPES: dict[str, tuple[int, torch.dtype, int]] = {
    "float16": (1, torch.float16, 10),
    "bfloat16": (2, torch.bfloat16, 7),
}
_SOURCE_BY_CODE = {code: name for name, (code, _, _) in SOURCE_DTYPES.items()}


class Fp8Serde:
    """The fp8 stage; see the module docstring.

    Args:
        fp8_dtype: `float8_e4m3fn` or `float8_e5m2`.
        source_dtype: `float16`, `bfloat16`, or `auto` (ask `dtype_of`).
        dtype_of: The element type of a key's KV (`float16`, `torch.bfloat16`, ...), None when unknown.
    """

    name = "fp8"

    def __init__(
        self,
        fp8_dtype: str = "float8_e4m3fn",
        source_dtype: str = "auto",
        dtype_of: Callable[[ObjectKey], str | None] | None = None,
    ) -> None:
        self.fp8 = fp8_dtype
        self.code, self.dtype, self.fmax, _, _ = FP8_FORMATS[fp8_dtype]
        self.source = source_dtype
        self._dtype_of = dtype_of
        self._table = torch.arange(256, dtype=torch.uint8).view(self.dtype).to(torch.float32).numpy()
        index = np.arange(1 << 16)
        pairs = np.stack([self._table[index & 0xFF], self._table[index >> 8]], axis=1)
        self._pair_table = np.ascontiguousarray(pairs).view(np.uint64).reshape(-1)  # 512 KiB

    def source_of(self, key: ObjectKey) -> str:
        """The source dtype name of `key`'s KV.

        Raises:
            SerdeError: Unknown or not a 16-bit float.
        """
        name = self.source
        if name == "auto":
            found = self._dtype_of(key) if self._dtype_of is not None else None
            name = (found or "").removeprefix("torch.")
        if name not in SOURCE_DTYPES:
            raise SerdeError(
                f"fp8 needs float16 or bfloat16 KV; the dtype of this object is {name or 'unknown'}"
            )
        return name

    def max_encoded_size(self, nbytes: int) -> int:
        """Header, scales and one byte per value."""
        values = nbytes // 2
        return _HEADER.size + 4 * -(-values // GROUP) + values

    def encode(self, key: ObjectKey, data: memoryview, reserve: int = 0, alloc: Alloc = fresh) -> memoryview:
        """Quantize 16-bit floats to fp8 with one scale per run of GROUP values."""
        source = self.source_of(key)
        src_code, src_dtype, _ = SOURCE_DTYPES[source]
        if data.nbytes % 2:
            raise SerdeError("fp8 needs an even number of bytes")
        count = data.nbytes // 2
        blocks = -(-count // GROUP)
        out = alloc(reserve + self.max_encoded_size(data.nbytes))
        _HEADER.pack_into(out, reserve, _MAGIC, _VERSION, self.code, src_code, _LOG2_GROUP, 0, count)
        if not count:
            return out
        x = torch.frombuffer(alloc(4 * blocks * GROUP), dtype=torch.float32)
        src = data if not data.readonly else memoryview(bytearray(data))
        x[:count].copy_(torch.frombuffer(src, dtype=src_dtype, count=count))
        x[count:] = 0.0
        runs = x.view(blocks, GROUP)
        low, high = torch.aminmax(runs, dim=1)
        amax = torch.maximum(high, low.neg_())
        if not bool(torch.isfinite(amax).all()):
            raise SerdeError("fp8 cannot store NaN or infinite values")
        scale = amax.div_(self.fmax)
        scale[scale == 0] = 1.0
        runs.div_(scale[:, None]).clamp_(-self.fmax, self.fmax)
        first = reserve + _HEADER.size
        torch.frombuffer(out, dtype=torch.float32, count=blocks, offset=first).copy_(scale)
        body = torch.frombuffer(out, dtype=torch.uint8, count=count, offset=first + 4 * blocks)
        body.view(self.dtype).copy_(x[:count])  # rounds to fp8 on the way
        return out

    def _header(self, data: memoryview) -> tuple[int, int]:
        if data.nbytes < _HEADER.size:
            raise SerdeMismatchError("not an fp8 serde object")
        magic, version, code, src_code, log2_group, _, count = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or log2_group != _LOG2_GROUP:
            raise SerdeMismatchError("not an fp8 serde object")
        if code != self.code:
            raise SerdeMismatchError(f"object quantized to another fp8 format than {self.fp8}")
        if src_code not in _SOURCE_BY_CODE:
            raise SerdeMismatchError("fp8 object of an unknown source dtype")
        if data.nbytes != _HEADER.size + 4 * -(-count // GROUP) + count:
            raise SerdeError("fp8 object size differs from its header")
        return src_code, count

    def decoded_size(self, key: ObjectKey, data: memoryview) -> int:
        """Two bytes per stored value."""
        return 2 * self._header(data)[1]

    def decode_into(self, key: ObjectKey, data: memoryview, dest: memoryview, alloc: Alloc = fresh) -> None:
        """Dequantize into `dest` in the source dtype the object was written from."""
        src_code, count = self._header(data)
        if dest.nbytes != 2 * count:
            raise SerdeError("fp8 object size differs from the buffer")
        if not count:
            return
        blocks = -(-count // GROUP)
        src_dtype = SOURCE_DTYPES[_SOURCE_BY_CODE[src_code]][1]
        scale = np.frombuffer(data, np.float32, count=blocks, offset=_HEADER.size)
        q = np.frombuffer(data, np.uint8, count=count, offset=_HEADER.size + 4 * blocks)
        x = np.frombuffer(alloc(4 * blocks * GROUP), np.float32)
        # fp8 -> fp32 by table, two values per lookup (torch's own conversion is ~3x slower on CPU)
        pairs = count // 2
        np.take(self._pair_table, q[: 2 * pairs].view(np.uint16), out=x[: 2 * pairs].view(np.uint64))
        if count % 2:
            x[count - 1] = self._table[q[-1]]
        x[count:] = 0.0
        runs = x.reshape(blocks, GROUP)
        np.multiply(runs, scale[:, None], out=runs)
        torch.frombuffer(dest, dtype=src_dtype, count=count).copy_(torch.from_numpy(x[:count]))
