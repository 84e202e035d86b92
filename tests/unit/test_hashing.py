from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cbor2
import pytest

from lmcache.domain.hashing import TokenError, TokenHasher, builtin_triple_hash

VECTORS = [
    (
        4,
        list(range(1, 10)),
        [
            "6309ed506b8721905753f5c73c070bb21c3aafbd9b474b1e231f41368b71123c",
            "98efc76eafb06cfe774c31ff151f300b61a614c27982a211bb8cdbd83a8c0e19",
        ],
    ),
    (256, list(range(256)), ["084547b6c40ed5b05ba8cd0305db5bf74d5617673948d9ed193ab7d6cbc484d4"]),
    (
        256,
        [0] + [9906] * 512,
        [
            "d65391f7dcbfb7f8472e8942ce76f5ca70a3ab0ffd0978c0640a27d07a9a336f",
            "4d033f8a28112da0d40257c88d086c2816f3827becdbb9056a484d19d8ea4b64",
        ],
    ),
    (
        256,
        [1] + [9906] * 512,
        [
            "a8564142a68a3bda3362424182f768bda1cbd41925dd4e6f4dc5d20c38e7af5d",
            "520c53219ad3dedea1fa4608ec3612c6d6a07a6b93afcd79c4eeea68b2197e32",
        ],
    ),
    (
        256,
        [5] + [9906] * 512,
        [
            "af962d3fc90b924c8c687e61cecee9fcbc372ad2d787aef53659d249c71180a3",
            "eb47fe95491db5880f0eaddb98bddbe85c0b350b05adc4788944bfdcaadd40c2",
        ],
    ),
]


@pytest.mark.parametrize(("chunk", "tokens", "expected"), VECTORS)
def test_blake3_vectors_are_byte_exact(chunk: int, tokens: list[int], expected: list[str]) -> None:
    assert [h.hex() for h in TokenHasher(chunk).chunk_hashes(tokens)] == expected


def test_none_hash_is_blake3_of_twelve_zero_bytes() -> None:
    none = TokenHasher(256).none_hash
    assert isinstance(none, bytes)
    assert none.hex() == "7e3eff9ef7613a50340eb12677ee03b83ac759fcba9bb32705f07248d56d473b"


def test_partial_trailing_chunk_is_dropped_and_end_limits() -> None:
    hasher = TokenHasher(256)
    tokens = [0] + [9906] * 512
    assert len(hasher.chunk_hashes(tokens)) == 2  # 513 tokens -> 2 chunks
    assert len(hasher.chunk_hashes(tokens, end=511)) == 1
    assert hasher.chunk_hashes(tokens, end=255) == []


def test_sub_range_chains_from_token_zero() -> None:
    hasher = TokenHasher(4)
    tokens = list(range(1, 17))
    full = hasher.chunk_hashes(tokens)
    assert hasher.new_chain().hashes(tokens, 8, 16) == full[2:4]
    # hashing the range's tokens alone would restart the chain and differ
    assert hasher.chunk_hashes(tokens[8:16]) != full[2:4]


def test_chain_caches_digests_across_chunked_prefill() -> None:
    hasher = TokenHasher(4)
    chain = hasher.new_chain()
    tokens = list(range(100, 140))
    chain.hashes(tokens, 0, 16)
    assert chain.chunks_hashed_total == 4
    chain.hashes(tokens, 16, 32)
    assert chain.chunks_hashed_total == 8  # only the 4 new chunks
    again = chain.hashes(tokens, 0, 32)
    assert chain.chunks_hashed_total == 8
    assert again == hasher.chunk_hashes(tokens[:32])


def test_chain_recomputes_when_tokens_change() -> None:
    hasher = TokenHasher(4)
    chain = hasher.new_chain()
    chain.hashes(list(range(16)))
    other = [99, *range(1, 16)]
    assert chain.hashes(other) == hasher.chunk_hashes(other)
    shorter = [77, *range(1, 8)]
    assert chain.hashes(shorter) == hasher.chunk_hashes(shorter)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
def test_tokens_must_be_uint32(bad: object) -> None:
    with pytest.raises(TokenError):
        TokenHasher(4).chunk_hashes([1, 2, 3, bad])  # type: ignore[list-item]


def test_sha256_cbor_follows_vllm_with_a_seed() -> None:
    hasher = TokenHasher(2, "sha256_cbor", hash_seed="42")
    none = hashlib.sha256(cbor2.dumps("42", canonical=True)).digest()
    h0 = hashlib.sha256(cbor2.dumps((none, (7, 8), None), canonical=True)).digest()
    h1 = hashlib.sha256(cbor2.dumps((h0, (9, 10), None), canonical=True)).digest()
    assert hasher.chunk_hashes([7, 8, 9, 10, 11]) == [h0, h1]


def test_sha256_cbor_without_seed_is_random_per_process() -> None:
    a = TokenHasher(2, "sha256_cbor", hash_seed=None).chunk_hashes([1, 2])
    b = TokenHasher(2, "sha256_cbor", hash_seed=None).chunk_hashes([1, 2])
    assert a != b


def test_builtin_triple_hash_matches_python_312() -> None:
    # hash((5, (1, 2), None)) printed by CPython 3.12.1, where hash(None) became a constant
    assert builtin_triple_hash(5, (1, 2)) == -5201717035134935738
    if sys.version_info >= (3, 12):
        assert builtin_triple_hash(-3, (9,)) == hash((-3, (9,), None))


def test_builtin_chain_uses_python_hash_and_8_byte_keys() -> None:
    hasher = TokenHasher(2, "builtin", hash_seed="7")
    none = hash("7")
    h0 = builtin_triple_hash(none, (1, 2))
    h1 = builtin_triple_hash(h0, (3, 4))
    assert hasher.chunk_hashes([1, 2, 3, 4]) == [
        h0.to_bytes(8, "big", signed=True),
        h1.to_bytes(8, "big", signed=True),
    ]


def test_builtin_is_stable_across_processes_with_pythonhashseed() -> None:
    code = (
        "import os; from lmcache.domain.hashing import TokenHasher;"
        "print(TokenHasher(2, 'builtin', os.environ['PYTHONHASHSEED']).chunk_hashes([1, 2, 3, 4])[1].hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_unknown_algorithm_and_chunk_size() -> None:
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        TokenHasher(4, "md5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        TokenHasher(0)
