"""The shared digest cache and lazily decoded wire tokens.

A prompt seen before is neither decoded nor rehashed, the answer stays exact, tenants stay apart, memory
stays bounded.
"""

from __future__ import annotations

import msgspec
import pytest

from lmcache.adapters.transport.handlers import request_key
from lmcache.adapters.transport.ops import KEY
from lmcache.adapters.transport.wire_tokens import WireTokens, array_length
from lmcache.adapters.transport.wire_types import CacheKey
from lmcache.domain.digest_cache import DigestCache
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.session_types import LookupGrid
from lmcache.domain.sessions import SessionManager

from ._storage import make_l1

C = 4
TOKENS = list(range(1, 17))  # 4 chunks
CONTENT = msgspec.msgpack.encode(TOKENS)


def _sessions(cache: DigestCache | None = None) -> tuple[SessionManager, TokenHasher]:
    l1, clock, _ = make_l1(slots=16)
    hasher = TokenHasher(C)
    return SessionManager(
        l1, hasher, clock, ttl_s=600, digests=cache if cache is not None else DigestCache()
    ), hasher


def _hashed(sessions: SessionManager, rid: str) -> int:
    return sessions.get(rid).chain.chunks_hashed_total


def test_a_token_list_seen_under_another_request_is_not_rehashed() -> None:
    sessions, hasher = _sessions()
    grid = LookupGrid("m", (0,), (0,), "tenant-a", 1)
    first = sessions.begin_lookup("cold", TOKENS, 16, grid, CONTENT)
    assert first == hasher.chunk_hashes(TOKENS) and _hashed(sessions, "cold") == 4
    warm = sessions.begin_lookup("warm", WireTokens(CONTENT), 16, grid, CONTENT)
    assert warm == first and _hashed(sessions, "warm") == 0
    # the retrieve of the warm request reuses the seeded chain, and a shorter range is a prefix of it
    assert sessions.hashes("warm", WireTokens(CONTENT), 8, 16, CONTENT, ("m", "tenant-a")) == first[2:]
    assert sessions.hashes("warm", TOKENS, 0, 8, CONTENT, ("m", "tenant-a")) == first[:2]
    assert _hashed(sessions, "warm") == 0


def test_the_cache_is_partitioned_by_model_and_salt() -> None:
    sessions, _ = _sessions()
    sessions.begin_lookup("a", TOKENS, 16, LookupGrid("m", (0,), (0,), "tenant-a", 1), CONTENT)
    sessions.begin_lookup("b", TOKENS, 16, LookupGrid("m", (0,), (0,), "tenant-b", 1), CONTENT)
    sessions.begin_lookup("c", TOKENS, 16, LookupGrid("m2", (0,), (0,), "tenant-a", 1), CONTENT)
    assert _hashed(sessions, "b") == 4 and _hashed(sessions, "c") == 4


def test_a_seeded_chain_handed_other_tokens_rehashes_them_correctly() -> None:
    sessions, hasher = _sessions()
    grid = LookupGrid("m", (0,), (0,), "", 1)
    sessions.begin_lookup("warm-up", TOKENS, 16, grid, CONTENT)
    sessions.begin_lookup("r", TOKENS, 16, grid, CONTENT)  # seeded: no tokens behind the chain
    grown = [*TOKENS, 99, 98, 97, 96]
    assert sessions.hashes("r", grown, 0, 20) == hasher.chunk_hashes(grown)  # chunked prefill, no content
    changed = [7, *TOKENS[1:]]
    assert sessions.hashes("r", changed, 0, 16, msgspec.msgpack.encode(changed)) == hasher.chunk_hashes(
        changed
    )


def test_more_chunks_than_cached_are_computed() -> None:
    sessions, hasher = _sessions()
    grid = LookupGrid("m", (0,), (0,), "", 1)
    sessions.begin_lookup("short", TOKENS, 8, grid, CONTENT)  # caches 2 chunks
    assert sessions.begin_lookup("long", TOKENS, 16, grid, CONTENT) == hasher.chunk_hashes(TOKENS)
    assert _hashed(sessions, "long") == 4


def test_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = DigestCache(max_bytes=10_000, max_entries=3)
    for i in range(5):
        cache.put(("m", ""), bytes([i]) * 10, [b"d" * 32])
    assert len(cache) == 3 and cache.get(("m", ""), bytes([0]) * 10, 1) is None
    assert cache.get(("m", ""), bytes([4]) * 10, 1) == [b"d" * 32]
    cache.put(("m", ""), b"x" * 20_000, [b"d" * 32])  # larger than the whole budget: not kept
    assert cache.get(("m", ""), b"x" * 20_000, 1) is None
    big = DigestCache(max_bytes=2_000, max_entries=100)
    for i in range(10):
        big.put(("m", ""), bytes([i]) * 500, [b"d" * 32])
    assert big.nbytes <= 2_000 and len(big) < 10
    assert big.get(("m", ""), bytes([9]) * 500, 1) is not None  # newest kept, oldest dropped
    assert big.get(("m", ""), bytes([0]) * 500, 1) is None


@pytest.mark.parametrize("count", [0, 15, 16, 70_000])
def test_wire_tokens_read_the_array_header_and_decode_once(count: int) -> None:
    ints = [i % 5000 for i in range(count)]
    tokens = WireTokens(msgspec.msgpack.encode(ints))
    assert len(tokens) == count == array_length(tokens.content)
    assert tokens._ints is None  # nothing decoded for the length
    assert tokens[:3] == ints[:3] and list(tokens) == ints and tokens == ints
    assert tokens.ints() is tokens.ints()


def test_wire_tokens_refuse_what_is_not_a_token_array() -> None:
    with pytest.raises(ValueError, match="not a msgpack array"):
        WireTokens(msgspec.msgpack.encode("abc"))
    with pytest.raises(ValueError, match="not a msgpack array"):
        WireTokens(b"\xdc\x00")  # truncated header
    bad = WireTokens(msgspec.msgpack.encode([1, "two", 3]))
    assert len(bad) == 3
    with pytest.raises(msgspec.ValidationError):
        bad.ints()


def test_the_server_key_decoder_keeps_the_wire_bytes() -> None:
    wire = msgspec.msgpack.encode(CacheKey("m", 1, 0, TOKENS, 0, 16, "r", "salt", None, 1))
    key = KEY.decode(wire)
    assert isinstance(key.token_ids, WireTokens) and key.token_ids == TOKENS
    request = request_key(key)
    assert request.token_content == CONTENT and request.scope == ("m", "salt")
    with pytest.raises(msgspec.ValidationError):
        KEY.decode(
            msgspec.msgpack.encode(
                {**msgspec.to_builtins(CacheKey("m", 1, 0, [], 0, 0, "r")), "token_ids": 5}
            )
        )
