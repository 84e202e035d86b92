"""What every serde stage provides, the errors a load can meet, and the envelope around a stored chain.

A stage turns bytes into bytes (`encode`) and back (`decode_into`), each output starting with the stage's
own small header (magic, version, parameters, sizes), so an object written by another chain, or by none,
is recognised and refused instead of decoded into garbage. The serde wrapper puts one envelope around
the chain's output::

    magic "LMSD" | version u8 | pad u8 | stages u16 | plain size u64 | chain output | pad bytes

`pad` is one zero byte when the stored object would otherwise be exactly as long as the plain one: a
server configured without the serde then always finds a size that does not match its buffer (a miss),
never compressed or encrypted bytes it could take for KV.

Stages run on the serde wrapper's thread pool with native code (torch, numpy, zstd, OpenSSL); they keep
no per-call state outside their arguments (per-thread codec contexts aside), so calls may overlap.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = (
    "ENVELOPE",
    "Alloc",
    "SerdeAuthError",
    "SerdeError",
    "SerdeMismatchError",
    "SerdeStage",
    "envelope",
    "fresh",
    "parse_envelope",
)

ENVELOPE = struct.Struct("<4sBBHQ")  # 16 bytes
MAGIC = b"LMSD"
VERSION = 1


Alloc = Callable[[int], memoryview]


def fresh(nbytes: int) -> memoryview:
    """A new writable buffer of `nbytes` (not zeroed): stages' default `alloc`."""
    return np.empty(nbytes, np.uint8).data


class SerdeError(ValueError):
    """A stored object the serde cannot decode (or a KV buffer it cannot encode): a miss, counted."""

    kind = "decode"


class SerdeMismatchError(SerdeError):
    """The object was not written by this serde chain (another chain, another layout, or no serde)."""

    kind = "mismatch"


class SerdeAuthError(SerdeError):
    """Authenticated decryption failed: a wrong key or a modified object."""

    kind = "auth"


class SerdeStage(Protocol):
    """One transform of a serde chain."""

    name: str

    def max_encoded_size(self, nbytes: int) -> int:
        """An upper bound of `encode`'s output (without the reserved head room) for `nbytes` of input."""
        ...

    def encode(
        self, key: ObjectKey, data: memoryview, reserve: int = 0, alloc: Alloc = fresh
    ) -> bytearray | memoryview:
        """The stage's output for `data`, after `reserve` bytes left for the caller at the start.

        Args:
            key: The object's key.
            data: The input.
            reserve: Bytes left at the start of the output for the caller.
            alloc: Where the output and scratch memory come from (the wrapper's pooled buffers).

        Raises:
            SerdeError: The input cannot be encoded (fp8: an unknown or non-16-bit dtype).
        """
        ...

    def decoded_size(self, key: ObjectKey, data: memoryview) -> int:
        """The size `decode_into` will produce, read from the stage's header.

        Raises:
            SerdeMismatchError: The header is not this stage's (or not its parameters).
        """
        ...

    def decode_into(self, key: ObjectKey, data: memoryview, dest: memoryview, alloc: Alloc = fresh) -> None:
        """Decode `data` into `dest`, exactly `decoded_size` bytes long (`alloc`: scratch memory).

        Raises:
            SerdeError: Inconsistent data, a failed authentication, a failed decompression.
        """
        ...


def envelope(out: bytearray | memoryview, plain_size: int, stages: int, pad: int) -> None:
    """Write the envelope header into the first 16 bytes of `out`."""
    ENVELOPE.pack_into(out, 0, MAGIC, VERSION, pad, stages, plain_size)


def parse_envelope(raw: memoryview, plain_size: int, stages: int) -> memoryview:
    """The chain output inside an envelope, checked against the expected plain size and stage count.

    Raises:
        SerdeMismatchError: Not an envelope of this chain for an object of `plain_size` bytes.
    """
    if raw.nbytes < ENVELOPE.size:
        raise SerdeMismatchError("no serde envelope (object stored without this serde?)")
    magic, version, pad, count, size = ENVELOPE.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        raise SerdeMismatchError("no serde envelope (object stored without this serde?)")
    if count != stages:
        raise SerdeMismatchError(f"object written by a chain of {count} stages, this one has {stages}")
    if size != plain_size:
        raise SerdeMismatchError(f"object holds {size} bytes, the buffer {plain_size}")
    if pad > 1 or raw.nbytes < ENVELOPE.size + pad:
        raise SerdeError("bad serde envelope padding")
    return raw[ENVELOPE.size : raw.nbytes - pad]
