"""Chunk hashing: token ids -> chained chunk digests (wire-protocol.md §6.1-6.2).

Tokens are packed in one C call (`array` + `byteswap`), never a Python loop over tokens; the only Python
loop is over chunks. `HashChain` is the per-request cache: it remembers the digests computed so far, so
chunked prefill (each request re-sends the whole prompt) hashes only the new chunks, and it starts over
when the already-hashed tokens changed (LMCache keeps stale hashes there; wire-protocol.md §5.6 asks us
to recompute).
"""

from __future__ import annotations

import hashlib
import os
import sys
from array import array
from typing import TYPE_CHECKING, Literal

import cbor2
from blake3 import blake3

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

HashAlgorithm = Literal["blake3", "sha256_cbor", "builtin"]
HASH_ALGORITHMS: tuple[HashAlgorithm, ...] = ("blake3", "sha256_cbor", "builtin")

# array typecode holding an unsigned 32-bit int on this platform ('I' nearly everywhere).
_U32 = "I" if array("I").itemsize == 4 else "L"
_LITTLE_ENDIAN = sys.byteorder == "little"
# CPython's tuple hash (xxHash lanes, 3.8+) and the constant hash(None) of 3.12+: `builtin` computes
# hash((prefix, tokens, None)) exactly as Python 3.12+ does, but stable across processes on 3.11 too,
# where hash(None) is an address (so the plain expression would change with every process).
_XXPRIME_1 = 11400714785074694791
_XXPRIME_2 = 14029467366897019727
_XXPRIME_5 = 2870177450012600261
_U64 = (1 << 64) - 1
_NONE_HASH_312 = 0xFCA86420

ChainValue = bytes | int


class TokenError(ValueError):
    """A token id is not an unsigned 32-bit integer."""


def pack_tokens(tokens: Sequence[int]) -> array[int]:
    """Pack token ids into a native-endian uint32 array in one C call.

    Raises:
        TokenError: When an id is negative, above 2**32-1 or not an int.
    """
    try:
        return array(_U32, tokens)
    except (OverflowError, TypeError) as exc:
        raise TokenError(f"token ids must be unsigned 32-bit integers ({exc})") from exc


def _big_endian_bytes(packed: array[int]) -> memoryview:
    if _LITTLE_ENDIAN:
        packed = array(_U32, packed)  # copy, then swap in C
        packed.byteswap()
    return memoryview(packed).cast("B")


def builtin_triple_hash(prefix: int, tokens: tuple[int, ...]) -> int:
    """`hash((prefix, tokens, None))` as Python 3.12+ computes it (hash(None) = 0xFCA86420)."""
    acc = _XXPRIME_5
    for lane in (hash(prefix), hash(tokens), _NONE_HASH_312):
        acc = (acc + (lane & _U64) * _XXPRIME_2) & _U64
        acc = ((acc << 31) | (acc >> 33)) & _U64
        acc = (acc * _XXPRIME_1) & _U64
    acc = (acc + (3 ^ _XXPRIME_5 ^ 3527539)) & _U64
    if acc == _U64:
        return 1546275796
    return acc - (1 << 64) if acc >> 63 else acc


def _sha256_cbor(value: object) -> bytes:
    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


class TokenHasher:
    """Stateless chunk hasher for one algorithm and chunk size; thread-safe.

    Args:
        chunk_size: Tokens per chunk (`--chunk-size`).
        algorithm: `blake3` (default, deterministic), `sha256_cbor` or `builtin`.
        hash_seed: Seed for the NONE hash of `sha256_cbor`/`builtin` (the server passes `PYTHONHASHSEED`,
            as LMCache does). Without one those two start from 32 random bytes per process, so their keys
            do not survive restarts.
    """

    def __init__(
        self, chunk_size: int, algorithm: HashAlgorithm = "blake3", hash_seed: str | None = None
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        if algorithm not in HASH_ALGORITHMS:
            raise ValueError(f"unknown hash algorithm {algorithm!r}; choose one of {HASH_ALGORITHMS}")
        self.chunk_size = chunk_size
        self.algorithm: HashAlgorithm = algorithm
        self.none_hash: ChainValue = self._none_hash(hash_seed)

    def _none_hash(self, seed: str | None) -> ChainValue:
        if self.algorithm == "blake3":
            # H(0, [0]): the int prefix 0 as 8 bytes big-endian signed, then token 0 as 4 bytes.
            return blake3(bytes(12)).digest()
        if self.algorithm == "sha256_cbor":
            return _sha256_cbor(seed) if seed is not None else os.urandom(32)
        return hash(seed) if seed is not None else int.from_bytes(os.urandom(8), "big", signed=True)

    def chain(self, prefix: ChainValue, packed: array[int], first_chunk: int, last_chunk: int) -> list[bytes]:
        """Hash chunks `[first_chunk, last_chunk)` of `packed`, chaining from `prefix`.

        Returns:
            One key digest per chunk: 32 bytes (blake3, sha256_cbor) or 8 bytes big-endian (builtin).
        """
        size = self.chunk_size
        out: list[bytes] = []
        if self.algorithm == "blake3":
            data = _big_endian_bytes(packed[first_chunk * size : last_chunk * size])
            step = size * 4
            digest = prefix if isinstance(prefix, bytes) else prefix.to_bytes(8, "big", signed=True)
            for offset in range(0, len(data), step):
                hasher = blake3(digest)
                hasher.update(data[offset : offset + step])
                digest = hasher.digest()
                out.append(digest)
            return out
        value: ChainValue = prefix
        for chunk in range(first_chunk, last_chunk):
            tokens = tuple(packed[chunk * size : (chunk + 1) * size].tolist())
            if self.algorithm == "sha256_cbor":
                value = _sha256_cbor((value, tokens, None))
                out.append(value)
            else:
                prev = value if isinstance(value, int) else int.from_bytes(value, "big", signed=True)
                value = builtin_triple_hash(prev, tokens)
                out.append(value.to_bytes(8, "big", signed=True))
        return out

    def chunk_hashes(self, tokens: Sequence[int], end: int | None = None) -> list[bytes]:
        """Digests of every full chunk of `tokens[0:end]` (a partial trailing chunk is dropped).

        Raises:
            TokenError: When a token id is not an unsigned 32-bit integer.
        """
        return self.new_chain().hashes(tokens, 0, len(tokens) if end is None else end)

    def new_chain(self) -> HashChain:
        """A fresh per-request cache of this hasher's chain."""
        return HashChain(self)


class HashChain:
    """The chunk digests of one request's tokens, extended on demand; not thread-safe (one per session).

    Args:
        hasher: The algorithm and chunk size.
    """

    def __init__(self, hasher: TokenHasher) -> None:
        self._hasher = hasher
        self._tokens: array[int] = array(_U32)  # the tokens of the chunks hashed so far
        self._digests: list[bytes] = []
        self._last: ChainValue = hasher.none_hash
        self._content: bytes | None = None  # wire bytes of the token list the digests were computed from
        self.chunks_hashed_total = 0  # counts real hash work; a test proves chunked prefill reuses digests

    @property
    def num_chunks(self) -> int:
        """How many chunk digests are cached."""
        return len(self._digests)

    def hashes(
        self, tokens: Sequence[int], start: int = 0, end: int | None = None, content: bytes | None = None
    ) -> list[bytes]:
        """Digests of the full chunks inside `[start, end)`, chaining from token 0.

        Args:
            tokens: The whole token list of the request so far (not just the range).
            start: First token of the range; rounded down to a chunk boundary.
            end: End of the range (exclusive, default all tokens); a partial trailing chunk is dropped.
            content: The token list's exact wire bytes, when known: a call with the same bytes as the
                previous one reuses its digests without reading `tokens`.

        Raises:
            TokenError: When a token id is not an unsigned 32-bit integer.
            ValueError: When the range is outside the tokens.
        """
        count = len(tokens)
        end = count if end is None else end
        if not 0 <= start <= end <= count:
            raise ValueError(f"range [{start}, {end}) is outside the {count} tokens")
        size = self._hasher.chunk_size
        last_chunk = end // size
        if content is not None and content == self._content and last_chunk <= len(self._digests):
            return self._digests[start // size : last_chunk]
        if last_chunk > len(self._digests):
            self._extend(pack_tokens(tokens[: last_chunk * size]), last_chunk)
        elif last_chunk and not self._same_prefix(tokens, last_chunk * size):
            self._reset()
            self._extend(pack_tokens(tokens[: last_chunk * size]), last_chunk)
        self._content = content
        return self._digests[start // size : last_chunk]

    def covers(self, content: bytes, chunks: int) -> bool:
        """Whether the last call's token list had these wire bytes and its first `chunks` are hashed."""
        return content == self._content and chunks <= len(self._digests)

    def seed(self, content: bytes, digests: Sequence[bytes]) -> None:
        """Adopt digests computed earlier for the token list whose wire bytes are `content`.

        A later call with other content cannot compare tokens against a seeded chain, so it rehashes from
        token 0 (correct, and rare: chunked prefill re-sends the same request's growing prompt).
        """
        self._reset()
        if not digests:
            return
        self._digests = list(digests)
        self._content = content
        last = self._digests[-1]
        self._last = int.from_bytes(last, "big", signed=True) if self._hasher.algorithm == "builtin" else last

    def hashes_cached(self, chunks: Iterable[int]) -> list[bytes]:
        """Already computed digests of the given chunk indices (indices not hashed yet are skipped)."""
        digests = self._digests
        return [digests[i] for i in chunks if 0 <= i < len(digests)]

    def _same_prefix(self, tokens: Sequence[int], length: int) -> bool:
        return pack_tokens(tokens[:length]) == self._tokens[:length]

    def _extend(self, packed: array[int], last_chunk: int) -> None:
        done = len(self._digests)
        known = done * self._hasher.chunk_size
        if packed[:known] != self._tokens[:known]:
            self._reset()
            done = 0
        new = self._hasher.chain(self._last, packed, done, last_chunk)
        self.chunks_hashed_total += len(new)
        self._digests.extend(new)
        self._tokens = packed
        if self._hasher.algorithm == "builtin":
            self._last = int.from_bytes(new[-1], "big", signed=True)
        else:
            self._last = new[-1]

    def _reset(self) -> None:
        self._tokens = array(_U32)
        self._digests = []
        self._last = self._hasher.none_hash
        self._content = None
