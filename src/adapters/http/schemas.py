"""Request bodies of the HTTP frontend (wire-protocol.md §7, the coordinator's calls), as msgspec Structs.

Litestar decodes and type-checks them; a wrong type is a 400 naming the field (errors.py). Rules msgspec
cannot state (finite numbers, key validity) are checked by the routes, which name the field too.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lmcache.adapters.http.errors import bad_request
from lmcache.domain.keys import InvalidKeyError, ObjectKey

__all__ = (
    "MAX_KEYS",
    "ChecksumBody",
    "ClearBody",
    "DeleteObjectsBody",
    "EncodedKey",
    "KeysBody",
    "PrefetchBody",
    "QuotaBody",
    "ScriptBody",
    "decode_keys",
)

MAX_KEYS = 10_000  # keys per delete request, and objects per listing page
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
TokenId = Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]  # token ids are unsigned 32-bit (hashing.py)


class EncodedKey(msgspec.Struct):
    """An EncodedObjectKey (wire-protocol.md §6.3)."""

    chunk_hash_hex: Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9a-f]{2})+$")]
    model_name: str
    kv_rank: NonNegInt
    object_group_id: NonNegInt = 0
    cache_salt: str = ""

    def to_key(self, where: str) -> ObjectKey:
        """Decode into a validated ObjectKey; a bad field is a 400 naming `where`."""
        try:
            return ObjectKey.build(
                bytes.fromhex(self.chunk_hash_hex),
                self.model_name,
                self.kv_rank,
                self.object_group_id,
                self.cache_salt,
            )
        except InvalidKeyError as exc:
            raise bad_request(where, str(exc)) from None

    @classmethod
    def from_key(cls, key: ObjectKey) -> EncodedKey:
        """Encode a key (the hash as lowercase hex)."""
        return cls(key.chunk_hash.hex(), key.model_name, key.kv_rank, key.object_group_id, key.cache_salt)


def decode_keys(keys: list[EncodedKey], field: str = "keys") -> list[ObjectKey]:
    """Decode a key list, at most `MAX_KEYS`; a bad entry is a 400 naming `keys[i]`."""
    if len(keys) > MAX_KEYS:
        raise bad_request(field, f"at most {MAX_KEYS} keys per request, got {len(keys)}")
    return [k.to_key(f"{field}[{i}]") for i, k in enumerate(keys)]


class ClearBody(msgspec.Struct):
    """`POST /cache/clear` (LMCache's `lmcache kvcache clear`)."""

    tier: str = "l1"
    force: bool = False


class ChecksumBody(msgspec.Struct):
    """`POST /cache/checksums` (wire-protocol.md §7.1; the bench's defaults)."""

    block_ids: list[int] = msgspec.field(default_factory=list)
    chunk_size: int = 0
    instance_id: int = 0
    layerwise: bool = False


class QuotaBody(msgspec.Struct):
    """`PUT /quota/{cache_salt}`."""

    limit_gb: float


class KeysBody(msgspec.Struct):
    """`DELETE /l2` (the coordinator's eviction)."""

    keys: list[EncodedKey]


class DeleteObjectsBody(msgspec.Struct):
    """`DELETE /cache/objects`: `force` also drops locked L1 objects; `adapter` picks the L2 tier."""

    keys: list[EncodedKey]
    tier: str = "l1"
    force: bool = False
    adapter: NonNegInt = 0


class PrefetchBody(msgspec.Struct):
    """`POST /l2/prefetch` (the coordinator's prefetch fan-out)."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    model_name: Annotated[str, msgspec.Meta(min_length=1)]
    world_size: Annotated[int, msgspec.Meta(ge=1, le=255)]
    token_ids: list[TokenId]
    cache_salt: str = ""


class ScriptBody(msgspec.Struct):
    """`POST /run_script` as JSON (a multipart upload with a `script` part works too)."""

    script: str
