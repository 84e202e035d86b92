"""The stored-object format: header round trip, key names, and every check that turns bytes into a miss."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmcache.adapters.storage.object_format import (
    ALGO_BLAKE3,
    ALGO_XXH3,
    FIXED_SIZE,
    CorruptObjectError,
    checksum,
    decode_into,
    encode_header,
    key_name,
    parse_header,
    parse_key_name,
)
from lmcache.domain.keys import ObjectKey

KEY = ObjectKey(b"\x01" * 32, "meta-llama/Llama-3.1-8B", 0x01000100, 2, "tenant a%b")


def _blob(key: ObjectKey = KEY, payload: bytes = b"kv" * 1000, align: int = 64) -> bytes:
    return encode_header(key, payload, align=align) + payload


def test_round_trip_copies_the_payload() -> None:
    payload = bytes(range(256)) * 40
    dest = bytearray(len(payload))
    decode_into(KEY, _blob(payload=payload), memoryview(dest))
    assert dest == payload


@pytest.mark.parametrize("align", [64, 4096])
def test_header_is_aligned_and_carries_key_size_and_checksum(align: int) -> None:
    payload = b"x" * 5000
    header = parse_header(_blob(payload=payload, align=align))
    assert header.header_len % align == 0 and header.header_len >= FIXED_SIZE
    assert header.key_name == key_name(KEY).encode()
    assert header.payload_size == 5000 and header.digest == checksum(payload)
    assert header.total_size == header.header_len + 5000


def test_large_payload_checksum_matches_single_threaded() -> None:
    import blake3

    payload = bytes(range(256)) * 8192  # 2 MiB: hashed on several threads
    assert checksum(payload, ALGO_BLAKE3) == blake3.blake3(payload).digest()


def test_objects_are_written_with_xxh3_and_blake3_objects_still_verify() -> None:
    import xxhash

    payload = bytes(range(256)) * 40
    blob = _blob(payload=payload)
    assert struct.unpack_from("<H", blob, 6)[0] == ALGO_XXH3
    assert parse_header(blob).digest == xxhash.xxh3_128_digest(payload) + bytes(16)
    # an object written by the earlier blake3 format: algorithm 1 and a blake3 digest
    old = bytearray(blob)
    struct.pack_into("<H", old, 6, ALGO_BLAKE3)
    struct.pack_into("<32s", old, 24, checksum(payload, ALGO_BLAKE3))
    dest = bytearray(len(payload))
    decode_into(KEY, bytes(old), memoryview(dest))
    assert dest == payload
    old[-1] ^= 1
    with pytest.raises(CorruptObjectError, match="checksum"):
        decode_into(KEY, bytes(old), memoryview(dest))
    unknown = bytearray(blob)
    struct.pack_into("<H", unknown, 6, 9)
    with pytest.raises(CorruptObjectError, match="algorithm"):
        parse_header(bytes(unknown))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b + b"\0", "truncated"),
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + struct.pack("<H", 99) + b[6:], "version"),
        (lambda b: b[:6] + struct.pack("<H", 7) + b[8:], "checksum algorithm"),
        (lambda b: b[:20], "short"),
    ],
)
def test_damage_is_detected(damage: object, message: str) -> None:
    blob = damage(_blob())  # type: ignore[operator]
    with pytest.raises(CorruptObjectError, match=message):
        decode_into(KEY, blob, memoryview(bytearray(2000)))


def test_wrong_key_and_wrong_size_are_detected() -> None:
    other = KEY._replace(cache_salt="other")
    with pytest.raises(CorruptObjectError, match="another key"):
        decode_into(other, _blob(), memoryview(bytearray(2000)))
    with pytest.raises(CorruptObjectError, match="differs"):
        decode_into(KEY, _blob(), memoryview(bytearray(1999)))


def test_key_name_is_safe_and_invertible() -> None:
    name = key_name(KEY)
    assert name.count("@") == 4 and "/" not in name and " " not in name
    assert parse_key_name(name) == KEY


@given(
    model=st.text(min_size=1, max_size=40).filter(lambda s: "@" not in s),
    salt=st.text(max_size=30).filter(lambda s: not set(s) & set("@/\\\x00")),
    rank=st.integers(0, 2**32 - 1),
    group=st.integers(0, 1000),
    digest=st.binary(min_size=1, max_size=64),
)
def test_key_name_round_trips_any_valid_key(
    model: str, salt: str, rank: int, group: int, digest: bytes
) -> None:
    key = ObjectKey(digest, model, rank, group, salt)
    assert parse_key_name(key_name(key)) == key


@pytest.mark.parametrize("name", ["", "a@b", "m@@1@0@zz", "m@@x@0@00"])
def test_foreign_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        parse_key_name(name)


@pytest.mark.parametrize("flip", [None, 0, 300_000, 3 * 2**20 - 1])
def test_large_payload_damage_is_detected_anywhere(flip: int | None) -> None:
    import numpy as np

    payload = np.random.default_rng(7).integers(0, 256, 3 * 2**20 + 17, dtype=np.uint8).tobytes()
    blob = bytearray(_blob(payload=payload))
    if flip is not None:
        blob[len(blob) - len(payload) + flip] ^= 0x10
    dest = bytearray(len(payload))
    if flip is None:
        assert decode_into(KEY, blob, memoryview(dest)) == len(payload)
        assert dest == payload
    else:
        with pytest.raises(CorruptObjectError, match="checksum mismatch"):
            decode_into(KEY, blob, memoryview(dest))
