"""zstd serde stage: lossless compression of KV bytes, after splitting 16-bit values into byte planes.

fp16/bf16 KV compresses poorly as it is: each value's low byte (mantissa) is close to random and sits
between high bytes (sign, exponent, top mantissa bits) that repeat a lot. The byte-plane shuffle (HDF5's
shuffle filter, for 2-byte elements) stores all low bytes, then all high bytes, so zstd sees the
repetitive plane whole. Both steps are native: the shuffle is two numpy casts (a byte copy each), the
compression zstd's C library through `zstandard` (which releases the GIL). Meant for bandwidth-bound
tiers (S3, Redis); `benchmarks/l2.py --serde` reports its ratio and throughput on KV from the e2e model.

Parameters: with `level` unset (the default) the compressor uses a preset chosen for KV: zstd's fast
strategy with a minimal match search (hash log 6, minimum match 7, 128 KiB window). KV gains almost
nothing from matches; what pays is the entropy coding of the high-byte plane, so this preset compresses
as well as level 1 at about four times its speed (1.49x on bf16 KV of the e2e models, 1.5 GB/s against
0.4 GB/s per core here). A `level` uses zstd's own parameters for that level.

Stage header (16 bytes): `"ZS"` | version u8 | flags u8 (1 = shuffled) | reserved u32 | plain size u64,
then one zstd frame. An odd trailing byte (odd-sized objects) is stored after the two planes.
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING

import numpy as np
import zstandard

from lmcache.adapters.storage.serde_base import Alloc, SerdeError, SerdeMismatchError, fresh

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = ("ZstdSerde", "shuffle16", "unshuffle16")

_HEADER = struct.Struct("<2sBBIQ")
_MAGIC = b"ZS"
_VERSION = 1
_SHUFFLED = 1


def shuffle16(data: memoryview, into: memoryview | None = None) -> np.ndarray:
    """Byte planes of `data` read as little-endian 16-bit values: low bytes, high bytes, odd tail byte."""
    raw = np.frombuffer(data, np.uint8)
    half = raw.size // 2
    words = raw[: 2 * half].view(np.uint16)
    out = np.frombuffer(into, np.uint8) if into is not None else np.empty(raw.size, np.uint8)
    np.copyto(out[:half], words, casting="unsafe")  # the low byte of each value
    np.right_shift(words, 8, out=out[half : 2 * half], casting="unsafe")
    out[2 * half :] = raw[2 * half :]
    return out


def unshuffle16(planes: bytes | memoryview, dest: memoryview) -> None:
    """Invert `shuffle16` into `dest` (same size)."""
    src = np.frombuffer(planes, np.uint8)
    out = np.frombuffer(dest, np.uint8)
    half = out.size // 2
    words = out[: 2 * half].view(np.uint16)
    np.copyto(words, src[half : 2 * half], casting="unsafe")
    words <<= 8
    words |= src[:half]
    out[2 * half :] = src[2 * half :]


def _bound(nbytes: int) -> int:
    """ZSTD_COMPRESSBOUND, plus room for the frame header."""
    small = ((128 << 10) - nbytes) >> 11 if nbytes < (128 << 10) else 0
    return nbytes + (nbytes >> 8) + small + 64


def _kv_preset() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters(
        window_log=17,
        hash_log=6,
        chain_log=6,
        search_log=1,
        min_match=7,
        target_length=0,
        strategy=zstandard.STRATEGY_FAST,
    )


class ZstdSerde:
    """The zstd stage; see the module docstring.

    Args:
        level: zstd compression level; None: the KV preset.
        shuffle: Split 16-bit values into byte planes first.
    """

    name = "zstd"

    def __init__(self, level: int | None = None, shuffle: bool = True) -> None:
        self.level = level
        self.shuffle = shuffle
        self._local = threading.local()  # zstd contexts are not thread-safe: one per pool thread

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            if self.level is None:
                compressor = zstandard.ZstdCompressor(compression_params=_kv_preset())
            else:
                compressor = zstandard.ZstdCompressor(level=self.level)
            ctx = self._local.ctx = (compressor, zstandard.ZstdDecompressor())
        return ctx

    def max_encoded_size(self, nbytes: int) -> int:
        """Header plus zstd's worst case."""
        return _HEADER.size + _bound(nbytes)

    def encode(self, key: ObjectKey, data: memoryview, reserve: int = 0, alloc: Alloc = fresh) -> memoryview:
        """Shuffle, compress, and prefix the stage header."""
        source = shuffle16(data, alloc(data.nbytes)).data if self.shuffle else data
        frame = self._contexts()[0].compress(source)
        out = alloc(reserve + _HEADER.size + len(frame))  # every byte is written below or by the caller
        flags = _SHUFFLED if self.shuffle else 0
        _HEADER.pack_into(out, reserve, _MAGIC, _VERSION, flags, 0, data.nbytes)
        out[reserve + _HEADER.size :] = frame
        return out

    def _header(self, data: memoryview) -> tuple[int, int]:
        if data.nbytes < _HEADER.size:
            raise SerdeMismatchError("not a zstd serde object")
        magic, version, flags, _, size = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise SerdeMismatchError("not a zstd serde object")
        return flags, size

    def decoded_size(self, key: ObjectKey, data: memoryview) -> int:
        """The plain size in the header."""
        return self._header(data)[1]

    def decode_into(self, key: ObjectKey, data: memoryview, dest: memoryview, alloc: Alloc = fresh) -> None:
        """Decompress (into scratch memory, or `dest` itself when not shuffled), then undo the shuffle."""
        flags, size = self._header(data)
        if size != dest.nbytes:
            raise SerdeError("zstd object size differs from the buffer")
        frame = data[_HEADER.size :]
        plain = alloc(size) if flags & _SHUFFLED else dest
        try:
            # Checked first: a frame must not declare more than the buffer holds.
            if zstandard.frame_content_size(frame) != size:
                raise SerdeError("zstd frame holds another size than its header says")
            with self._contexts()[1].stream_reader(frame) as reader:
                done = 0
                while done < size and (got := reader.readinto(plain[done:])):
                    done += got
                if done != size or reader.read(1):
                    raise SerdeError("zstd frame holds another size than its header says")
        except zstandard.ZstdError as exc:
            raise SerdeError(f"zstd frame does not decompress: {exc}") from exc
        if flags & _SHUFFLED:
            unshuffle16(plain, dest)
