"""Blocking transfers of the mooncake_store adapter (run on its threads): multi-buffer puts and gets.

An object is two buffers to Mooncake: its header (a small staging array) and its payload (the caller's
buffer, an L1 extent), so neither side copies the payload. Every buffer is registered for the call
unless a permanent registration (the L1 arena) covers it. A get whose byte count is not header +
buffer (another layout, a damaged object) re-reads the object whole, up to 1 MiB past the buffer, and
lets the object format classify it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lmcache.adapters.storage._load_outcomes import too_large
from lmcache.adapters.storage._native_mem import address_of
from lmcache.adapters.storage.object_format import (
    CorruptObjectError,
    decode_into,
    encode_header,
    header_len_for,
    key_name,
    parse_header,
    verify_payload,
)

if TYPE_CHECKING:
    from lmcache.adapters.storage._native_mem import RegisteredRanges
    from lmcache.domain.keys import ObjectKey

__all__ = ("NOT_FOUND", "get_all", "get_all_sized", "put_all")

NOT_FOUND = -704


def put_all(
    client: Any,
    memory: RegisteredRanges,
    config: Any,
    names: list[str],
    keys: list[ObjectKey],
    buffers: list[memoryview],
) -> list[int]:
    """batch_put_from_multi_buffers of header + payload per object; Mooncake's code per object."""
    headers = [encode_header(k, b) for k, b in zip(keys, buffers, strict=True)]
    staging = np.frombuffer(b"".join(headers), np.uint8)
    base = address_of(staging)
    ptrs, sizes, offset = [], [], 0
    for header, buf in zip(headers, buffers, strict=True):
        ptrs.append([base + offset, address_of(buf)])
        sizes.append([len(header), buf.nbytes])
        offset += len(header)
    spans = [(base, staging.nbytes)] + [(p[1], s[1]) for p, s in zip(ptrs, sizes, strict=True)]
    with memory.hold(spans):
        codes = client.batch_put_from_multi_buffers(names, ptrs, sizes, config)
    return [int(c) for c in codes]


def get_all(
    client: Any, memory: RegisteredRanges, names: list[str], keys: list[ObjectKey], buffers: list[memoryview]
) -> list[CorruptObjectError | bool | int]:
    """batch_get_into_multi_buffers, header into staging and payload into each buffer, then verified."""
    hlens = [header_len_for(key_name(k).encode()) for k in keys]
    staging = np.zeros(sum(hlens), np.uint8)
    base = address_of(staging)
    starts = np.cumsum([0, *hlens[:-1]]).tolist()
    ptrs = [[base + s, address_of(b)] for s, b in zip(starts, buffers, strict=True)]
    sizes = [[h, b.nbytes] for h, b in zip(hlens, buffers, strict=True)]
    spans = [(base, staging.nbytes)] + [(p[1], s[1]) for p, s in zip(ptrs, sizes, strict=True)]
    with memory.hold(spans):
        codes = client.batch_get_into_multi_buffers(names, ptrs, sizes)
    out: list[CorruptObjectError | bool | int] = []
    for i, (key, buf, code) in enumerate(zip(keys, buffers, codes, strict=True)):
        if code == NOT_FOUND:
            out.append(False)
        elif code == hlens[i] + buf.nbytes:
            out.append(_verify(key, staging[starts[i] : starts[i] + hlens[i]], buf))
        else:
            out.append(_slow_get(client, memory, names[i], key, buf))
    return out


def _verify(key: ObjectKey, header_bytes: np.ndarray[Any, Any], buf: memoryview) -> CorruptObjectError | bool:
    try:
        header = parse_header(header_bytes.data)
        if header.header_len != header_bytes.nbytes:
            raise CorruptObjectError("header length differs")
        verify_payload(header, key, buf)
    except CorruptObjectError as exc:
        return exc
    return True


def get_all_sized(
    client: Any, memory: RegisteredRanges, names: list[str], keys: list[ObjectKey], buffers: list[memoryview]
) -> list[CorruptObjectError | bool | int]:
    """For `load_sized`: each object read whole at its stored size (a serde's objects vary in size).

    Each is verified into the start of its buffer: its payload size, False for a miss, or the failed check.
    """
    return [
        _slow_get(client, memory, name, key, buf, exact=False)
        for name, key, buf in zip(names, keys, buffers, strict=True)
    ]


def _slow_get(
    client: Any, memory: RegisteredRanges, name: str, key: ObjectKey, buf: memoryview, exact: bool = True
) -> CorruptObjectError | bool | int:
    """Read an object whose size is not the expected one whole, and classify it.

    A sound object answers True, or its payload size when not `exact`.
    """
    size = int(client.get_size(name))
    if size <= 0:
        return False  # gone (NOT_FOUND) or unreadable: a plain miss
    refused = too_large(size, buf.nbytes)
    if refused is not None:
        return refused
    whole = np.zeros(size, np.uint8)
    with memory.hold([(address_of(whole), size)]):
        got = int(client.batch_get_into([name], [address_of(whole)], [size])[0])
    if got == NOT_FOUND:
        return False
    if got != size:
        return CorruptObjectError(f"read {got} of {size} bytes")
    try:
        size = decode_into(key, whole.data, buf, exact)
    except CorruptObjectError as exc:
        return exc
    return True if exact else size
