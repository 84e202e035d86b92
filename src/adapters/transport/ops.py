"""The op table of wire-protocol.md §2: ids, names, payload types, failure values, pools and modes.

Each payload is decoded against its declared type; `int` and `bool` payloads are decoded untyped and
coerced with `int()` / `bool()` as LMCache does (so `true` is 1 and `3.0` is 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from lmcache.adapters.transport.blend_wire import CB_LOOKUP_FAILURE, CBMatchResult
from lmcache.adapters.transport.wire_types import (
    BlockAllocationRecord,
    EngineGroupInfo,
    EngineType,
    KVEventBatch,
    PrepareRetrieveResponse,
    PrepareStoreResponse,
    RegisterEngineDrivenContextPayload,
    RegisterEngineDrivenContextResponse,
    WireCacheKey,
)
from lmcache.domain.transfer_modes import serves_engine_driven, serves_lmcache_driven

Pool = Literal["sync", "aff", "cpu", "stream"]
Mode = Literal["L", "E", "B", "all"]
_ANY = msgspec.msgpack.Decoder()


class _Coerce:
    """Decode untyped, then coerce (LMCache's `int(x)` / `bool(x)` on int and bool payloads)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def decode(self, data: bytes) -> Any:
        value = _ANY.decode(data)
        if self.kind is int and not isinstance(value, int | float | bool):
            raise msgspec.ValidationError(f"expected an int, got {type(value).__name__}")
        return self.kind(value)


def _typed(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


INT, BOOL = _Coerce(int), _Coerce(bool)
STR, FLOAT, BYTES = _typed(str), _typed(float), _typed(bytes)
OPT_INT = _typed(int | None)
KEY = _typed(WireCacheKey)
BLOCK_IDS = _typed(list[list[int]])
WRAPPERS = _typed(list[msgspec.msgpack.Ext])
ENGINE_TYPE = _typed(EngineType)
HINTS = _typed(dict[str, Any])
GROUP_INFOS = _typed(list[EngineGroupInfo])
ED_PAYLOAD = _typed(RegisterEngineDrivenContextPayload)
ALLOC_RECORDS = _typed(list[BlockAllocationRecord])
INT_LIST = _typed(list[int])
INT_LISTS = _typed(list[list[int]])
MATCHES = _typed(list[CBMatchResult])

FAIL_TRANSFER = (b"", False)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: how to decode it, where it runs, what it answers on failure."""

    name: str
    op_id: int | None
    payloads: tuple[Any, ...]
    failure: Any
    pool: Pool
    mode: Mode = "all"
    max_bytes: int = 64 << 20
    defaults: tuple[Any, ...] = ()  # values of trailing payloads an older client may leave out
    # Answered with the bare acknowledgement whatever happens (success and failure both reply None): run
    # on the socket thread, it is acknowledged before its handler runs, so the client's next step
    # overlaps the work, and every later request, read by the same thread, still sees its effects. Only
    # `lookup` is marked: its result is read through the status poll that follows it. free_lookup_locks
    # and end_session, also None either way, keep answering after their work, so an operator reading
    # /status over HTTP (another thread) right after their reply sees the locks gone.
    void: bool = False

    def __post_init__(self) -> None:
        if self.void and self.failure is not None:
            raise ValueError(f"op {self.name}: a void op answers None on failure too")


_OPS = (
    Op("register_kv_cache", 1, (INT, WRAPPERS, STR, INT, ENGINE_TYPE, HINTS, GROUP_INFOS), None, "sync", "L"),
    Op("unregister_kv_cache", 2, (INT,), None, "sync", "L"),
    Op("store", 6, (KEY, INT, BLOCK_IDS, BYTES), FAIL_TRANSFER, "aff", "L"),
    Op("retrieve", 7, (KEY, INT, BLOCK_IDS, BYTES, INT), FAIL_TRANSFER, "aff", "L"),
    Op("lookup", 8, (KEY, INT), None, "cpu", void=True),
    Op("query_prefetch_status", 9, (STR,), 0, "cpu"),
    Op("wait_prefetch_status", 10, (STR, FLOAT), 0, "cpu"),
    Op("free_lookup_locks", 12, (KEY, INT), None, "cpu"),
    Op("end_session", 13, (STR,), None, "cpu"),
    Op(
        "register_kv_cache_engine_driven_context",
        14,
        (ED_PAYLOAD,),
        RegisterEngineDrivenContextResponse(),
        "sync",
        "E",
    ),
    Op("unregister_kv_cache_engine_driven_context", 15, (INT,), None, "sync", "E"),
    Op("prepare_store", 16, (KEY, INT), PrepareStoreResponse(), "aff", "E"),
    Op("commit_store", 17, (KEY, INT, BYTES), False, "aff", "E", max_bytes=1 << 40),
    Op("prepare_retrieve", 18, (KEY, INT), PrepareRetrieveResponse(False), "aff", "E"),
    Op("commit_retrieve", 19, (KEY, INT), False, "aff", "E"),
    Op("clear", 20, (BOOL,), None, "cpu"),
    Op("get_chunk_size", 21, (), None, "sync"),
    Op("ping", 22, (OPT_INT,), True, "cpu"),
    Op("report_block_allocation", 23, (INT, STR, ALLOC_RECORDS), None, "cpu"),
    Op("noop", 24, (), "OK", "sync"),
    Op("get_experimental", 32, (), [], "sync"),
    Op("subscribe_kv_events", None, (INT, STR, INT, INT), KVEventBatch(False, 0, 0, False, []), "stream"),
    # CacheBlend (cacheblend.md §2): served only with --engine-type blend; without it they answer [uid, op].
    Op(
        "cb_register_rope",
        25,
        (INT, WRAPPERS, INT, BOOL, INT_LIST, INT_LISTS, INT_LIST, STR),
        None,
        "sync",
        "B",
        defaults=([], ""),  # the V3 client sent 6 frames
    ),
    Op("cb_unregister_rope", 26, (INT,), None, "sync", "B"),
    Op("cb_retrieve_pre_computed", 27, (KEY, MATCHES, BLOCK_IDS, INT, BYTES), FAIL_TRANSFER, "aff", "B"),
    Op("cb_unified_lookup", 28, (KEY, INT), CB_LOOKUP_FAILURE, "cpu", "B"),
    Op("cb_protocol_handshake", 33, (INT,), (1, False), "sync", "B"),
    Op("cb_reorder_plan", None, (KEY, INT, INT), [], "cpu", "B"),
)

OPS_BY_NAME: dict[str, Op] = {op.name: op for op in _OPS}
OPS_BY_ID: dict[int, Op] = {op.op_id: op for op in _OPS if op.op_id is not None}
# The deprecated V3 client names of two CacheBlend ops (same ids, same payloads).
_ALIASES = {
    "cb_register_rope_v3": "cb_register_rope",
    "cb_retrieve_pre_computed_v3": "cb_retrieve_pre_computed",
}
# Known to the protocol but out of this server's scope (QStore, P2P, plugins): answered with their
# failure value so a client never hangs.
UNSUPPORTED: dict[str | int, Any] = {
    3: None,
    4: None,
    5: FAIL_TRANSFER,
    29: -1,
    30: [],
    31: None,
    "server_module_call": {"success": False, "payload": b"", "error": "server modules are not supported"},
}
_NAMES_OF_UNSUPPORTED = {
    "register_q_cache": 3,
    "unregister_q_cache": 4,
    "store_q": 5,
    "p2p_lookup_and_lock": 29,
    "p2p_query_lookup_results": 30,
    "p2p_unlock_objects": 31,
}


def resolve(op_value: object) -> tuple[Op | None, Any, bool]:
    """Map a decoded op frame to (op, failure value of an unsupported op, known)."""
    if isinstance(op_value, bool):
        return None, None, False
    if isinstance(op_value, int):
        if op_value in OPS_BY_ID:
            return OPS_BY_ID[op_value], None, True
        return None, UNSUPPORTED.get(op_value), op_value in UNSUPPORTED
    if isinstance(op_value, str):
        op_value = _ALIASES.get(op_value, op_value)
        if op_value in OPS_BY_NAME:
            return OPS_BY_NAME[op_value], None, True
        alias = _NAMES_OF_UNSUPPORTED.get(op_value, op_value)
        return None, UNSUPPORTED.get(alias), alias in UNSUPPORTED
    return None, None, False


def mode_allows(op: Op, transfer_mode: str) -> bool:
    """Whether `--supported-transfer-mode` registers this op."""
    if op.mode == "L":
        return serves_lmcache_driven(transfer_mode)
    if op.mode == "E":
        return serves_engine_driven(transfer_mode)
    return True
