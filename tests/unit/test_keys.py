from __future__ import annotations

import msgspec
import pytest

from lmcache.adapters.wire_key import EncodedKey, StrictEncodedKey
from lmcache.domain.keys import (
    InvalidKeyError,
    ObjectKey,
    kv_ranks_for,
    pack_kv_rank,
    salt_alias,
    salt_from_alias,
    unpack_kv_rank,
    validate_cache_salt,
    validate_model_name,
)


def test_kv_rank_vectors_from_the_wire_protocol() -> None:
    assert pack_kv_rank(1, 0) == 0x01000100 == 16777472
    assert pack_kv_rank(2, 1) == 0x02010201 == 33620481
    assert unpack_kv_rank(0x02010201) == (2, 1, 2, 1)


def test_scheduler_key_fans_out_to_every_rank() -> None:
    assert kv_ranks_for(4, None) == tuple(pack_kv_rank(4, r) for r in range(4))
    assert kv_ranks_for(4, 3) == (pack_kv_rank(4, 3),)


@pytest.mark.parametrize(("world", "rank"), [(0, 0), (2, 2), (2, -1), (256, 0)])
def test_kv_rank_rejects_out_of_range(world: int, rank: int) -> None:
    with pytest.raises(InvalidKeyError):
        pack_kv_rank(world, rank)


@pytest.mark.parametrize("salt", ["a@b", "a/b", "a\\b", "a\x00b", "x" * 129])
def test_bad_salts_are_rejected(salt: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_cache_salt(salt)


def test_good_salts_pass() -> None:
    assert validate_cache_salt("") == ""
    assert validate_cache_salt("tenant-1" * 16) == "tenant-1" * 16


@pytest.mark.parametrize("name", ["", "org@model"])
def test_bad_model_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_model_name(name)


def test_all_five_fields_are_identity() -> None:
    base = ObjectKey(b"\x01" * 32, "m", 1, 0, "")
    variants = [
        base._replace(chunk_hash=b"\x02" * 32),
        base._replace(model_name="n"),
        base._replace(kv_rank=2),
        base._replace(object_group_id=1),
        base._replace(cache_salt="s"),
    ]
    assert len({base, *variants}) == 6


def test_encoded_key_round_trip_and_defaults() -> None:
    key = ObjectKey.build(bytes(range(32)), "llama", 16777472, 2, "t1")
    enc = EncodedKey.from_key(key)
    assert enc.chunk_hash_hex == bytes(range(32)).hex()
    assert msgspec.json.decode(msgspec.json.encode(enc), type=EncodedKey).to_key() == key
    short = msgspec.convert({"chunk_hash_hex": "ab" * 32, "model_name": "m", "kv_rank": 1}, EncodedKey)
    assert short.to_key() == ObjectKey(b"\xab" * 32, "m", 1, 0, "")
    extra = {"chunk_hash_hex": "ab", "model_name": "m", "kv_rank": 1, "future_field": 3}
    assert msgspec.convert(extra, EncodedKey).to_key() == ObjectKey(b"\xab", "m", 1, 0, "")
    with pytest.raises(msgspec.ValidationError, match="future_field"):
        msgspec.convert(extra, StrictEncodedKey)


@pytest.mark.parametrize(
    "fields",
    [
        {"chunk_hash_hex": "XYZ"},
        {"chunk_hash_hex": "abc"},  # odd number of digits
        {"chunk_hash_hex": "ab" * 65},  # longer than a 64-byte digest
        {"kv_rank": -1},
        {"model_name": "m" * 1025},
    ],
)
def test_encoded_key_rejects_bad_fields_while_decoding(fields: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"chunk_hash_hex": "ab", "model_name": "m", "kv_rank": 1, **fields}, EncodedKey)


def test_encoded_key_applies_the_key_rules() -> None:
    with pytest.raises(InvalidKeyError):
        EncodedKey("ab", "m", 1, 0, "a/b").to_key()
    with pytest.raises(InvalidKeyError):
        EncodedKey("ab", "m@x", 1).to_key()


def test_default_salt_alias() -> None:
    assert salt_from_alias("_default") == ""
    assert salt_alias("") == "_default"
    assert salt_from_alias("t") == "t" == salt_alias("t")
