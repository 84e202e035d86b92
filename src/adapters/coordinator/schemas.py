"""Request bodies of the coordinator API (coordinator-api.md), as msgspec Structs.

Litestar decodes and validates them; a malformed body is a 400 whose `extra` names the field (`key`).
Unknown fields are ignored, so newer servers and tools can send more.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar.exceptions import ValidationException

from lmcache.adapters.wire_key import EncodedKey as WireEncodedKey

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = (
    "BlendFingerprintsBody",
    "BlendLookupBody",
    "BlendMatchBody",
    "BlendRangeBody",
    "EncodedKey",
    "EventBody",
    "EventsBody",
    "PrefetchBody",
    "QuotaBody",
    "RegisterBody",
    "RemoveFingerprintsBody",
    "bad_request",
    "decode_tokens",
)

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class RegisterBody(msgspec.Struct):
    """`POST /instances`."""

    ip: Annotated[str, msgspec.Meta(min_length=1)]
    http_port: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    instance_id: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    p2p_advertised_url: str = ""
    mq_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0


class QuotaBody(msgspec.Struct):
    """`PUT /l2/quota/{salt}`."""

    limit_gb: Annotated[float, msgspec.Meta(ge=0)]


class EncodedKey(WireEncodedKey):
    """An EncodedObjectKey in an event batch (adapters/wire_key.py; unknown fields are ignored)."""

    def to_key_at(self, where: str) -> ObjectKey:
        """Decode into a validated ObjectKey; a bad field is a 400 naming `where`."""
        try:
            return self.to_key()
        except ValueError as exc:  # InvalidKeyError is a ValueError
            raise bad_request(where, str(exc)) from None


class EventBody(msgspec.Struct):
    """One L2 event of a batch."""

    type: Literal["store", "lookup", "delete"]
    key: EncodedKey
    bytes: NonNegInt = 0


class EventsBody(msgspec.Struct):
    """`POST /l2/events`."""

    instance_id: Annotated[str, msgspec.Meta(min_length=1)]
    seq: Annotated[int, msgspec.Meta(ge=1)]
    events: list[EventBody]


class PrefetchBody(msgspec.Struct):
    """`POST /l2/prefetch`."""

    instance_id: Annotated[str, msgspec.Meta(min_length=1)]
    model_name: Annotated[str, msgspec.Meta(min_length=1)]
    world_size: Annotated[int, msgspec.Meta(ge=1, le=255)]
    token_ids: list[int]
    cache_salt: str = ""


class BlendRangeBody(msgspec.Struct):
    """One range of `POST /blend/fingerprints`."""

    model_scope: str
    tokens: list[int]
    object_keys: list[str]
    old_st_base: NonNegInt = 0


class BlendFingerprintsBody(msgspec.Struct):
    """`POST /blend/fingerprints`."""

    ranges: list[BlendRangeBody]


class RemoveFingerprintsBody(msgspec.Struct):
    """`DELETE /blend/fingerprints`."""

    object_keys: list[str]


class BlendMatchBody(msgspec.Struct):
    """`POST /blend/match`: one of `tokens_b64` (uint32 LE) or `tokens_u64_b64` (uint64 LE)."""

    model_scope: str
    tokens_b64: str | None = None
    tokens_u64_b64: str | None = None


class BlendLookupBody(msgspec.Struct):
    """`POST /directory/blend-lookup` (the LMCache 0.5.6 name)."""

    tokens_b64: str
    model_name: str
    cache_salt: str = ""
    world_size: int = 1


def bad_request(field: str, message: str) -> ValidationException:
    """A 400 naming the offending field, in Litestar's validation-error shape."""
    return ValidationException(
        detail=f"{field}: {message}", extra=[{"message": message, "key": field, "source": "body"}]
    )


def decode_tokens(b64: str, width: int, field: str) -> list[int]:
    """Decode base64 little-endian unsigned token ids (`width` 4 or 8 bytes each).

    Raises:
        ValidationException: When the text is not base64 or its length is not a multiple of `width`.
    """
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        raise bad_request(field, "not valid base64") from None
    if len(raw) % width:
        raise bad_request(field, f"length {len(raw)} is not a multiple of {width} bytes")
    values = array({4: "I", 8: "Q"}[width])
    if values.itemsize != width:  # pragma: no cover - exotic platforms
        raise bad_request(field, "unsupported platform integer width")
    values.frombytes(raw)
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        values.byteswap()
    return values.tolist()
