"""The JSON form of an ObjectKey (wire-protocol.md §6.3), declared once for every HTTP API.

`{"chunk_hash_hex", "model_name", "kv_rank", "object_group_id", "cache_salt"}`: the server's routes
(`DELETE /l2`, `GET /l2/keys`, `/cache/objects`), the coordinator's event batches and its calls back to
servers all read and write this one struct. Field bounds are checked while decoding; the key rules (salt
characters, model name) by `ObjectKey.build`. The server's request bodies refuse unknown fields
(`StrictEncodedKey`); the coordinator, fed by servers of other versions, ignores them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lmcache.domain.keys import ObjectKey

__all__ = ("MAX_HASH_HEX", "MAX_MODEL_NAME", "EncodedKey", "StrictEncodedKey")

MAX_HASH_HEX = 128  # a 64-byte digest at most (blake3 and sha256 give 32)
MAX_MODEL_NAME = 1024
_INT64_MAX = (1 << 63) - 1
_NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]


class EncodedKey(msgspec.Struct):
    """An EncodedObjectKey; `to_key` raises `InvalidKeyError` for a field that breaks the key rules."""

    chunk_hash_hex: Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9a-f]{2})+$", max_length=MAX_HASH_HEX)]
    model_name: Annotated[str, msgspec.Meta(max_length=MAX_MODEL_NAME)]
    kv_rank: _NonNegInt
    object_group_id: _NonNegInt = 0
    cache_salt: Annotated[str, msgspec.Meta(max_length=128)] = ""

    def to_key(self) -> ObjectKey:
        """The validated ObjectKey."""
        return ObjectKey.build(
            bytes.fromhex(self.chunk_hash_hex),
            self.model_name,
            self.kv_rank,
            self.object_group_id,
            self.cache_salt,
        )

    @classmethod
    def from_key(cls, key: ObjectKey) -> EncodedKey:
        """Encode a key (the hash as lowercase hex)."""
        return cls(key.chunk_hash.hex(), key.model_name, key.kv_rank, key.object_group_id, key.cache_salt)


class StrictEncodedKey(EncodedKey, forbid_unknown_fields=True):
    """An EncodedKey in a request body of the server's API: a field it does not define is an error."""
