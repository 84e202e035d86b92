"""Object keys: one stored KV object's identity and its kv_rank packing (JSON form: adapters/wire_key.py).

`ObjectKey` is a NamedTuple rather than a frozen dataclass: the L1 index holds one per object (a million
and more), and a tuple hashes and compares in C at half the memory of a slotted dataclass. Validation
therefore lives in `ObjectKey.build` and the `validate_*` functions instead of `__init__`; keys built from
trusted parts (the hasher's digests, a validated request) may use the plain constructor.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_CACHE_SALT_LEN = 128
_FORBIDDEN_SALT_CHARS = frozenset("@/\\\x00")
_RANK_FIELD_MAX = 0xFF  # each kv_rank field is one byte wide
DEFAULT_SALT_ALIAS = "_default"  # how HTTP paths and quota tables spell the empty cache_salt


class InvalidKeyError(ValueError):
    """A key field violates the rules of wire-protocol.md §3.1 / §6.3."""


def validate_cache_salt(salt: str) -> str:
    """Check a cache_salt: at most 128 characters, no `@`, `/`, backslash or NUL.

    Args:
        salt: The tenant salt as sent by the client ("" = no salt).

    Returns:
        The salt unchanged.

    Raises:
        InvalidKeyError: When the salt is too long or holds a forbidden character.
    """
    if len(salt) > MAX_CACHE_SALT_LEN:
        raise InvalidKeyError(f"cache_salt longer than {MAX_CACHE_SALT_LEN} characters")
    if not _FORBIDDEN_SALT_CHARS.isdisjoint(salt):
        raise InvalidKeyError("cache_salt must not contain '@', '/', '\\' or NUL")
    return salt


def validate_model_name(model_name: str) -> str:
    """Check a model name: non-empty and without `@` (the separator of LMCache's string keys).

    Raises:
        InvalidKeyError: When the name is empty or contains `@`.
    """
    if not model_name:
        raise InvalidKeyError("model_name must not be empty")
    if "@" in model_name:
        raise InvalidKeyError("model_name must not contain '@'")
    return model_name


def pack_kv_rank(world_size: int, worker_id: int) -> int:
    """Pack (world_size, worker_id) the way LMCache 0.5.6 does (local world = world, ranks = worker_id).

    `kv_rank = (world_size << 24) | (global_rank << 16) | (local_world_size << 8) | local_rank`.

    Raises:
        InvalidKeyError: When a field does not fit its byte or the rank is outside the world.
    """
    if not 0 < world_size <= _RANK_FIELD_MAX:
        raise InvalidKeyError(f"world_size must be in 1..{_RANK_FIELD_MAX}, got {world_size}")
    if not 0 <= worker_id < world_size:
        raise InvalidKeyError(f"worker_id must be in 0..{world_size - 1}, got {worker_id}")
    return (world_size << 24) | (worker_id << 16) | (world_size << 8) | worker_id


def unpack_kv_rank(kv_rank: int) -> tuple[int, int, int, int]:
    """Split a kv_rank into (world_size, global_rank, local_world_size, local_rank)."""
    return (kv_rank >> 24) & 0xFF, (kv_rank >> 16) & 0xFF, (kv_rank >> 8) & 0xFF, kv_rank & 0xFF


def kv_ranks_for(world_size: int, worker_id: int | None) -> tuple[int, ...]:
    """The kv_ranks a request covers: one for a worker key, every rank for a scheduler key (None)."""
    if worker_id is None:
        return tuple(pack_kv_rank(world_size, rank) for rank in range(world_size))
    return (pack_kv_rank(world_size, worker_id),)


class ObjectKey(NamedTuple):
    """Identity of one L1/L2 object: one chunk, one kv_rank, one object group, one tenant.

    All five fields are identity; `cache_salt` keeps tenants apart.
    """

    chunk_hash: bytes
    model_name: str
    kv_rank: int
    object_group_id: int = 0
    cache_salt: str = ""

    @classmethod
    def build(
        cls, chunk_hash: bytes, model_name: str, kv_rank: int, object_group_id: int = 0, cache_salt: str = ""
    ) -> ObjectKey:
        """Build a key from untrusted parts, validating each.

        Raises:
            InvalidKeyError: When a field is invalid.
        """
        if not chunk_hash:
            raise InvalidKeyError("chunk_hash must not be empty")
        if kv_rank < 0 or object_group_id < 0:
            raise InvalidKeyError("kv_rank and object_group_id must be >= 0")
        return cls(
            bytes(chunk_hash),
            validate_model_name(model_name),
            kv_rank,
            object_group_id,
            validate_cache_salt(cache_salt),
        )

    def short(self) -> str:
        """A compact human form for logs: `model@rank@group@salt@hash-prefix`."""
        head = f"{self.model_name}@{self.kv_rank:#x}@{self.object_group_id}"
        return f"{head}@{self.cache_salt}@{self.chunk_hash[:6].hex()}"


def salt_from_alias(name: str) -> str:
    """Map the HTTP/quota spelling of a salt to the key's salt (`_default` -> "")."""
    return "" if name == DEFAULT_SALT_ALIAS else name


def salt_alias(salt: str) -> str:
    """Map a key's salt to its HTTP/quota spelling ("" -> `_default`)."""
    return DEFAULT_SALT_ALIAS if salt == "" else salt
