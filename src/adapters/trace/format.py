"""The `.lct` storage-trace format, byte-compatible with LMCache 0.5.6's trace files.

A file is a sequence of frames: a 4-byte big-endian length, then that many bytes of msgpack. The first
frame is the header, a map tagged `"type": "header"` (`magic=b"LMCT"`, `format_version=1`, `level`,
`trace_schema_version=1`, `t_mono_start`, `t_wall_start`, `sm_config_json` and its SHA-256 hex
`sm_config_digest`, and `level_meta` when not empty); every later frame is a map tagged `"type": "record"`
(`t_mono` relative to the header's, `t_wall`, `qualname`, `args`). Argument values that msgpack cannot
carry natively are wrapped as `{"__t__": tag, "v": payload}`; an `ObjectKey` is
`{"__t__": "ObjectKey", "v": {"chunk_hash", "model_name", "kv_rank", "object_group_id"}}`, plus
`cache_salt` when it is not empty (0.5.6's decoder ignores the extra field; its own files never carry it).

Our `level_meta` names the producer, the rotation series and the part number, so a rotated trace's files
can be put back in order. A frame longer than `MAX_FRAME_BYTES` is taken as corruption.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgspec

from lmcache.domain.keys import ObjectKey

__all__ = (
    "FORMAT_VERSION",
    "LEN",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "TRACE_SCHEMA_VERSION",
    "Header",
    "KeyCodec",
    "Record",
    "RecordOut",
    "config_digest",
    "encode_value",
    "wrap_key",
)

MAGIC = b"LMCT"
FORMAT_VERSION = 1
TRACE_SCHEMA_VERSION = 1
LEN = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 2**20
_KEY_TAG = "ObjectKey"


class Header(msgspec.Struct, tag="header", tag_field="type", omit_defaults=True):
    """The first frame of every file (field names and order as 0.5.6 writes them)."""

    magic: bytes
    format_version: int
    level: str
    trace_schema_version: int
    t_mono_start: float
    t_wall_start: float
    sm_config_json: str
    sm_config_digest: str
    level_meta: dict[str, Any] = msgspec.field(default_factory=dict)


class Record(msgspec.Struct, tag="record", tag_field="type"):
    """One recorded call, as read: `args` stays encoded until a replay handler decodes it for its call."""

    t_mono: float
    t_wall: float
    qualname: str
    args: msgspec.Raw


class RecordOut(msgspec.Struct, tag="record", tag_field="type"):
    """One recorded call, as written (`args` already in msgpack form: see `KeyCodec`)."""

    t_mono: float
    t_wall: float
    qualname: str
    args: dict[str, Any]


def config_digest(config_json: str) -> str:
    """The header's `sm_config_digest`: SHA-256 hex of the config JSON ("" for an empty config)."""
    return hashlib.sha256(config_json.encode()).hexdigest() if config_json else ""


def wrap_key(key: ObjectKey) -> dict[str, Any]:
    """The wrapped form of one key."""
    fields: dict[str, Any] = {
        "chunk_hash": key.chunk_hash,
        "model_name": key.model_name,
        "kv_rank": key.kv_rank,
        "object_group_id": key.object_group_id,
    }
    if key.cache_salt:
        fields["cache_salt"] = key.cache_salt
    return {"__t__": _KEY_TAG, "v": fields}


class KeyCodec:
    """Encodes argument values; a key becomes its wrapped form, already msgpack-encoded (`msgspec.Raw`).

    A key recurs in its reserve, finish, locks, reads and unlocks, so its bytes are kept (bounded, cleared
    when full) and a record's keys are copied, not re-encoded. Used by one writer thread.
    """

    def __init__(self, max_keys: int = 1 << 16) -> None:
        self._cache: dict[ObjectKey, msgspec.Raw] = {}
        self._max = max_keys
        self._encode = msgspec.msgpack.Encoder().encode

    def key(self, key: ObjectKey) -> msgspec.Raw:
        """The encoded wrapped form of `key`."""
        raw = self._cache.get(key)
        if raw is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            raw = self._cache[key] = msgspec.Raw(self._encode(wrap_key(key)))
        return raw

    def value(self, value: Any) -> Any:
        """`value` in its msgpack form (keys wrapped, tuples as lists, mappings by value)."""
        if type(value) is ObjectKey:
            return self.key(value)
        if isinstance(value, list | tuple):
            if value and type(value[0]) is ObjectKey:
                key = self.key
                return [key(v) for v in value]
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


def encode_value(value: Any) -> Any:
    """`value` in its msgpack form, without a cache (tests and one-off writers)."""
    return KeyCodec().value(value)
