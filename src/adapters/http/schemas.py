"""Request bodies of the HTTP frontend (wire-protocol.md §7, the coordinator's calls), as msgspec Structs.

Litestar decodes and type-checks them; a wrong type, a value out of its bounds or a field the struct does
not know is a 400 naming the field (errors.py). Every list and string a client sends is capped here, so no
request can make the server allocate or compute without bound; the bounds also reach the OpenAPI schema
(`/schema/openapi.json`) the HTTP fuzzer (benchmarks/fuzz_http.py) is driven by. Rules msgspec cannot
state (key validity) are checked by the routes, which name the field too.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lmcache.adapters.http.errors import bad_request
from lmcache.adapters.wire_key import StrictEncodedKey
from lmcache.domain.keys import InvalidKeyError, ObjectKey

__all__ = (
    "MAX_BLOCK_IDS",
    "MAX_KEYS",
    "MAX_QUOTA_GB",
    "MAX_TOKENS",
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
MAX_BLOCK_IDS = 1 << 16  # block ids per checksum request (also at most the engine's pool, checked there)
MAX_TOKENS = 1 << 20  # token ids per coordinator prefetch
MAX_QUOTA_GB = float(1 << 20)  # 1 PiB: beyond any host's L1, and far from float overflow in bytes
MAX_NAME = 1024  # model names
INT64_MAX = (1 << 63) - 1
Int64 = Annotated[int, msgspec.Meta(ge=-INT64_MAX - 1, le=INT64_MAX)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
TokenId = Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]  # token ids are unsigned 32-bit (hashing.py)
Salt = Annotated[str, msgspec.Meta(max_length=128)]
ModelName = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    """A request body: a field it does not define is a 400 naming it, never silently ignored."""


class EncodedKey(StrictEncodedKey):
    """An EncodedObjectKey in a request body (adapters/wire_key.py)."""

    def to_key_at(self, where: str) -> ObjectKey:
        """Decode into a validated ObjectKey; a bad field is a 400 naming `where`."""
        try:
            return self.to_key()
        except InvalidKeyError as exc:
            raise bad_request(where, str(exc)) from None


KeyList = Annotated[list[EncodedKey], msgspec.Meta(max_length=MAX_KEYS)]


def decode_keys(keys: list[EncodedKey], field: str = "keys") -> list[ObjectKey]:
    """Decode a key list, at most `MAX_KEYS`; a bad entry is a 400 naming `keys[i]`."""
    if len(keys) > MAX_KEYS:
        raise bad_request(field, f"at most {MAX_KEYS} keys per request, got {len(keys)}")
    return [k.to_key_at(f"{field}[{i}]") for i, k in enumerate(keys)]


class ClearBody(Strict):
    """`POST /cache/clear` (LMCache's `lmcache kvcache clear`)."""

    tier: Annotated[str, msgspec.Meta(max_length=16)] = "l1"
    force: bool = False


class ChecksumBody(Strict):
    """`POST /cache/checksums` (wire-protocol.md §7.1; the bench's defaults)."""

    block_ids: Annotated[list[Int64], msgspec.Meta(max_length=MAX_BLOCK_IDS)] = msgspec.field(
        default_factory=list
    )
    chunk_size: Int64 = 0
    instance_id: Int64 = 0
    layerwise: bool = False


class QuotaBody(Strict):
    """`PUT /quota/{cache_salt}` (parsed by the route itself; this is its documented shape)."""

    limit_gb: Annotated[float, msgspec.Meta(ge=0, le=MAX_QUOTA_GB)]


class KeysBody(Strict):
    """`DELETE /l2` (the coordinator's eviction)."""

    keys: KeyList


class DeleteObjectsBody(Strict):
    """`DELETE /cache/objects`: `force` also drops locked L1 objects; `adapter` picks the L2 tier."""

    keys: KeyList
    tier: Annotated[str, msgspec.Meta(max_length=16)] = "l1"
    force: bool = False
    adapter: NonNegInt = 0


class PrefetchBody(Strict):
    """`POST /l2/prefetch` (the coordinator's prefetch fan-out)."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    model_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    world_size: Annotated[int, msgspec.Meta(ge=1, le=255)]
    token_ids: Annotated[list[TokenId], msgspec.Meta(max_length=MAX_TOKENS)]
    cache_salt: Salt = ""


class ScriptBody(Strict):
    """`POST /run_script` as JSON (a multipart upload with a `script` part works too)."""

    script: Annotated[str, msgspec.Meta(max_length=1 << 20)]
