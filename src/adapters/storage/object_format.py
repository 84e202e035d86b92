"""The stored-object format shared by every L2 backend: a small header, then the payload.

Layout (little-endian)::

    magic "LMKV" | version u16 | checksum algorithm u16 | header_len u32 | key_len u32 |
    payload_size u64 | checksum(payload) 32 bytes | encoded key (key_len bytes) | zero padding | payload

The checksum algorithm is 2 = xxh3-128 (written today; its 16 bytes are zero-padded to 32) or 1 =
blake3-256 (written before, still verified). xxh3 detects the corruption this field is for (torn writes,
flipped bytes, truncation) at about 5x blake3's speed, which is what lets a load keep up with the disk
(benchmarks/l2.py). An unknown algorithm is a failed check.

`header_len` is the payload's offset: 64-byte aligned by default, 4096 for O_DIRECT files, so a reader
can fetch the header with one small read and the payload with one bulk read into the caller's buffer.
The encoded key is `key_name(key)`, the same string backends use as the object's name, so a load that
finds another key's bytes (a hash collision of file names, a renamed object) is detected, and listings
and index rebuilds recover the full `ObjectKey` from names or headers.

Every failed check raises `CorruptObjectError`; callers turn it into a miss and count it, never data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote, unquote

import blake3
import numpy as np
import xxhash

from lmcache.domain.keys import ObjectKey

Buffer: TypeAlias = bytes | bytearray | memoryview

__all__ = (
    "ALGO_BLAKE3",
    "ALGO_XXH3",
    "FORMAT_VERSION",
    "BufferMismatchError",
    "CorruptObjectError",
    "ObjectHeader",
    "UnusableObjectError",
    "check_payload_fits",
    "checksum",
    "copy_payload",
    "decode_into",
    "encode_header",
    "header_len_for",
    "key_name",
    "parse_header",
    "parse_key_name",
    "verify_payload",
)

MAGIC = b"LMKV"
FORMAT_VERSION = 1
ALGO_BLAKE3 = 1
ALGO_XXH3 = 2
ALGO_WRITTEN = ALGO_XXH3
_FIXED = struct.Struct("<4sHHIIQ32s")
FIXED_SIZE = _FIXED.size  # 56
MAX_KEY_LEN = 2048
MIN_READ = 4096  # one read of this many bytes always covers a header (keys are far shorter)
_GIL_FREE_COPY = 256 << 10  # numpy's copy releases the GIL; below this, a memoryview copy is cheaper
_THREADED_HASH_BYTES = 1 << 20


class CorruptObjectError(ValueError):
    """A stored object failed a header, size, key or checksum check."""

    file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the damaged file, where a file was read


class UnusableObjectError(CorruptObjectError):
    """An object that cannot be used although nothing shows its bytes are damaged: a miss, never quarantined.

    For example a backend's error reply in place of the object.
    """


class BufferMismatchError(UnusableObjectError):
    """A sound object whose payload size is not the reader's buffer size (another layout of the same key)."""


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    """A parsed header."""

    version: int
    header_len: int
    key_name: bytes
    payload_size: int
    digest: bytes
    algorithm: int = ALGO_WRITTEN

    @property
    def total_size(self) -> int:
        """Bytes of the whole stored object."""
        return self.header_len + self.payload_size


def key_name(key: ObjectKey) -> str:
    """The object's name: `model@salt@kv_rank@group@hash`, model and salt percent-encoded.

    The result holds only `[A-Za-z0-9_.~%@-]`, so it is safe as a Redis key, an S3 key and part of a
    file name, and `parse_key_name` inverts it exactly.
    """
    return (
        f"{quote(key.model_name, safe='')}@{quote(key.cache_salt, safe='')}@"
        f"{key.kv_rank:x}@{key.object_group_id:x}@{key.chunk_hash.hex()}"
    )


def parse_key_name(name: str) -> ObjectKey:
    """Invert `key_name`.

    Raises:
        ValueError: When the name is not one `key_name` produces (InvalidKeyError is a ValueError).
    """
    parts = name.split("@")
    if len(parts) != 5:
        raise ValueError(f"not an object name: {name!r}")
    model, salt, rank, group, digest = parts
    chunk_hash = bytes.fromhex(digest)
    return ObjectKey.build(chunk_hash, unquote(model), int(rank, 16), int(group, 16), unquote(salt))


def checksum(payload: Buffer, algorithm: int = ALGO_WRITTEN) -> bytes:
    """The 32-byte header digest of a payload under `algorithm` (xxh3-128 zero-padded, or blake3-256)."""
    view = memoryview(payload)
    if algorithm == ALGO_XXH3:
        return xxhash.xxh3_128_digest(view) + bytes(16)
    if algorithm != ALGO_BLAKE3:
        raise CorruptObjectError(f"unknown checksum algorithm {algorithm}")
    threads = blake3.blake3.AUTO if view.nbytes >= _THREADED_HASH_BYTES else 1
    return blake3.blake3(view, max_threads=threads).digest()


def header_len_for(name: bytes, align: int = 64) -> int:
    """Header bytes (the payload offset) for an encoded key, rounded up to `align`."""
    return -(-(FIXED_SIZE + len(name)) // align) * align


def encode_header(key: ObjectKey, payload: Buffer, align: int = 64, digest: bytes | None = None) -> bytes:
    """Build the header of one object.

    Args:
        key: The object's key.
        payload: The payload bytes (hashed here unless `digest` is given).
        align: Payload offset alignment (64, or 4096 for O_DIRECT).
        digest: A precomputed `checksum(payload)`.
    """
    name = key_name(key).encode()
    size = memoryview(payload).nbytes
    hlen = header_len_for(name, align)
    digest = digest or checksum(payload)
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, ALGO_WRITTEN, hlen, len(name), size, digest)
    return fixed + name + bytes(hlen - FIXED_SIZE - len(name))


def parse_header(data: Buffer) -> ObjectHeader:
    """Parse the header at the start of `data` (at least the header's bytes).

    Raises:
        CorruptObjectError: Bad magic, unknown version, impossible lengths or a short buffer.
    """
    view = memoryview(data)
    if view.nbytes < FIXED_SIZE:
        raise CorruptObjectError(f"short header ({view.nbytes} bytes)")
    magic, version, algo, hlen, klen, size, digest = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CorruptObjectError("bad magic")
    if version != FORMAT_VERSION:
        raise CorruptObjectError(f"unknown format version {version}")
    if algo not in (ALGO_BLAKE3, ALGO_XXH3):
        raise CorruptObjectError(f"unknown checksum algorithm {algo}")
    if klen > MAX_KEY_LEN or hlen < FIXED_SIZE + klen:
        raise CorruptObjectError("bad header lengths")
    if view.nbytes < FIXED_SIZE + klen:
        raise CorruptObjectError("short header")
    name = bytes(view[FIXED_SIZE : FIXED_SIZE + klen])
    return ObjectHeader(version, hlen, name, size, digest, algo)


def verify_payload(header: ObjectHeader, key: ObjectKey, payload: Buffer) -> None:
    """Check that a header belongs to `key` and that `payload` matches its size and checksum.

    Raises:
        CorruptObjectError: On a wrong key, a size mismatch or a checksum mismatch.
    """
    if header.key_name != key_name(key).encode():
        raise CorruptObjectError("object belongs to another key")
    if memoryview(payload).nbytes != header.payload_size:
        raise CorruptObjectError("payload size mismatch")
    if checksum(payload, header.algorithm) != header.digest:
        raise CorruptObjectError("checksum mismatch")


def check_payload_fits(payload_size: int, dest: memoryview, exact: bool) -> None:
    """A payload must fill `dest` exactly (`load`) or fit at its start (`load_sized`, exact False).

    Raises:
        BufferMismatchError: When it does not (a sound object of another layout: a miss, not damage).
    """
    if payload_size != dest.nbytes if exact else payload_size > dest.nbytes:
        raise BufferMismatchError("payload size differs from the buffer")


def decode_into(key: ObjectKey, blob: Buffer, dest: memoryview, exact: bool = True) -> int:
    """Verify a whole stored object held in memory and copy its payload into (the start of) `dest`.

    Returns:
        The payload size (`len(dest)` when `exact`).

    Raises:
        CorruptObjectError: On any failed check, including a payload size other than `len(dest)` (or
            larger than it when not `exact`).
    """
    view = memoryview(blob)
    header = parse_header(view)
    check_payload_fits(header.payload_size, dest, exact)
    if view.nbytes != header.total_size:
        raise CorruptObjectError("object truncated or padded")
    payload = view[header.header_len :]
    verify_payload(header, key, payload)
    copy_payload(dest[: header.payload_size], payload)
    return header.payload_size


def copy_payload(dest: memoryview, payload: Buffer) -> None:
    """`dest[:] = payload`, without holding the GIL for large objects.

    Loads copy on I/O threads while the event loop reads the next reply off a socket; a memoryview copy
    holds the GIL for its whole length (about 0.4 ms per 4 MiB), numpy's does not.
    """
    if dest.nbytes < _GIL_FREE_COPY:
        dest[:] = payload
        return
    np.copyto(np.frombuffer(dest, np.uint8), np.frombuffer(payload, np.uint8))
