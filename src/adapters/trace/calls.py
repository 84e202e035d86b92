"""The replayable calls: for each recorded qualname, a typed decoder of its arguments and its handler.

Two dialects: ours (`lmcache.domain.*`, see `domain/trace_hooks.py`) and LMCache 0.5.6's StorageManager
(`reserve_write`, `finish_write`, `submit_prefetch_task`, `read_prefetched_results.__enter__/__exit__`,
`finish_read_prefetched`), so a trace recorded by either server replays here. Arguments are decoded by
msgspec straight into small structs (unknown fields are ignored, so newer producers still replay), then
keys become `ObjectKey`s. A qualname not in `HANDLERS` is skipped and counted by the player.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from lmcache.adapters.trace.recorder import DROPPED_QUALNAME
from lmcache.domain.keys import ObjectKey
from lmcache.domain.trace_hooks import QUALNAMES

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.trace_replay import ReplayEngine

__all__ = ("HANDLERS", "LOOKUP_QUALNAMES", "SM056", "Handler", "layout_bytes")

SM056 = "lmcache.v1.distributed.storage_manager.StorageManager"


class _KeyV(msgspec.Struct):
    chunk_hash: bytes
    model_name: str
    kv_rank: int
    object_group_id: int = 0
    cache_salt: str = ""


class _Key(msgspec.Struct, tag="ObjectKey", tag_field="__t__"):
    v: _KeyV


class _Keys(msgspec.Struct):
    keys: list[_Key]


class _Reserve(msgspec.Struct):
    keys: list[_Key]
    sizes: int | list[int]


class _Finish(msgspec.Struct):
    keys: list[_Key]
    read_locks: int = 0
    temporary: bool = False


class _KeysN(msgspec.Struct):
    keys: list[_Key]
    n: int = 1


class _Extent(msgspec.Struct):
    key: _Key


class _Delete(msgspec.Struct):
    keys: list[_Key]
    force: bool = False


class _Force(msgspec.Struct):
    force: bool = False


class _Evict(msgspec.Struct):
    target_bytes: int
    reason: str = "watermark"


class _Temporary(msgspec.Struct):
    keys: list[_Key]
    reason: str = "stored_to_l2"


class _Empty(msgspec.Struct):
    pass


class _Outcome(msgspec.Struct):
    prefix_chunks: int


class _Lookup(msgspec.Struct):
    rows: list[list[_Key]]
    object_sizes: list[int]
    num_kv_readers: int = 1
    outcome: _Outcome | None = None


class _QuotaSet(msgspec.Struct):
    salt: str
    limit_bytes: int


class _Salt(msgspec.Struct):
    salt: str


class _Count(msgspec.Struct):
    count: int


# ------------------------------------------------------------------------------ LMCache 0.5.6 arguments
class _LayoutV(msgspec.Struct):
    shapes: list[list[int]]
    dtypes: list[str]


class _Layout(msgspec.Struct, tag="MemoryLayoutDesc", tag_field="__t__"):
    v: _LayoutV


class _ReserveWrite(msgspec.Struct):
    keys: list[_Key]
    layout_desc: _Layout


class _GroupV(msgspec.Struct):
    keys: list[_Key]
    layout_desc: _Layout
    object_group_id: int = 0


class _Group(msgspec.Struct, tag="GroupedObjectKeys", tag_field="__t__"):
    v: _GroupV


class _SpecV(msgspec.Struct):
    key_groups: list[_Group]
    num_kv_readers: int = 1


class _Spec(msgspec.Struct, tag="PrefetchTaskSpec", tag_field="__t__"):
    v: _SpecV


class _SubmitPrefetch(msgspec.Struct):
    spec: _Spec


class _FinishRead(msgspec.Struct):
    keys: list[_Key]
    read_locks: int = 1


_DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


def layout_bytes(layout: _Layout) -> int:
    """Bytes of one object of a 0.5.6 `MemoryLayoutDesc` (its tensors' elements times their widths).

    Raises:
        ValueError: An unknown dtype.
    """
    total = 0
    for shape, dtype in zip(layout.v.shapes, layout.v.dtypes, strict=True):
        name = dtype.removeprefix("torch.")
        width = _DTYPE_BYTES.get(name, 1 if name.startswith("float8") else 0)
        if not width:
            raise ValueError(f"unknown dtype {dtype!r} in a recorded layout")
        total += math.prod(shape) * width
    return total


# ----------------------------------------------------------------------------------------- handlers
def _keys(wrapped: list[_Key]) -> list[ObjectKey]:
    k = ObjectKey
    return [
        k(w.v.chunk_hash, w.v.model_name, w.v.kv_rank, w.v.object_group_id, w.v.cache_salt) for w in wrapped
    ]


def _lookup(e: ReplayEngine, a: _Lookup) -> None:
    rows = [_keys(row) for row in a.rows]
    e.lookup(rows, a.object_sizes, a.num_kv_readers, a.outcome.prefix_chunks if a.outcome else None)


def _submit_prefetch(e: ReplayEngine, a: _SubmitPrefetch) -> None:
    groups = a.spec.v.key_groups
    rows = [_keys(g.v.keys) for g in groups]
    width = min((len(r) for r in rows), default=0)
    rows = [r[:width] for r in rows]
    e.lookup(rows, [layout_bytes(g.v.layout_desc) for g in groups], a.spec.v.num_kv_readers)


def _finish_read(e: ReplayEngine, a: _FinishRead) -> None:
    e.l1.unlock_read(_keys(a.keys), a.read_locks)


Handler = tuple[msgspec.msgpack.Decoder[Any], "Callable[[ReplayEngine, Any], object]"]
_Q = QUALNAMES


def _h(struct: type[msgspec.Struct], fn: Callable[[ReplayEngine, Any], object]) -> Handler:
    return msgspec.msgpack.Decoder(struct), fn


HANDLERS: dict[str, Handler] = {
    _Q["reserve"]: _h(_Reserve, lambda e, a: e.reserve(_keys(a.keys), a.sizes)),
    _Q["finish"]: _h(_Finish, lambda e, a: e.finish(_keys(a.keys), a.read_locks, a.temporary)),
    _Q["abort"]: _h(_Keys, lambda e, a: e.l1.abort(_keys(a.keys))),
    _Q["lock_read"]: _h(_KeysN, lambda e, a: e.l1.lock_read(_keys(a.keys), a.n)),
    _Q["lock_prefix"]: _h(_KeysN, lambda e, a: e.l1.lock_prefix(_keys(a.keys), a.n)),
    _Q["unlock_read"]: _h(_KeysN, lambda e, a: e.l1.unlock_read(_keys(a.keys), a.n)),
    _Q["extent"]: _h(_Extent, lambda e, a: e.read(_keys([a.key])[0])),
    _Q["delete"]: _h(_Delete, lambda e, a: e.l1.delete(_keys(a.keys), a.force)),
    _Q["clear"]: _h(_Force, lambda e, a: e.l1.clear(a.force)),
    _Q["evict"]: _h(_Evict, lambda e, a: e.evict(a.target_bytes, a.reason)),
    _Q["evict_over_quota"]: _h(_Empty, lambda e, a: e.l1.evict_over_quota()),
    _Q["mark_temporary"]: _h(_Temporary, lambda e, a: e.mark_temporary(_keys(a.keys), a.reason)),
    _Q["reap_expired"]: _h(_Empty, lambda e, a: e.l1.reap_expired()),
    _Q["touch"]: _h(_Keys, lambda e, a: e.l1.touch(_keys(a.keys))),
    _Q["retain"]: _h(_Keys, lambda e, a: e.l1.retain(_keys(a.keys))),
    _Q["step"]: _h(_Empty, lambda e, a: e.step()),
    _Q["run_job_now"]: _h(_Lookup, _lookup),
    _Q["prefetch"]: _h(_Lookup, _lookup),
    _Q["submit"]: _h(_Keys, lambda e, a: e.l2_submit(_keys(a.keys))),
    _Q["l2_store"]: _h(_Keys, lambda e, a: e.l2_store(_keys(a.keys))),
    _Q["quota_set"]: _h(_QuotaSet, lambda e, a: e.quota_set(a.salt, a.limit_bytes)),
    _Q["quota_delete"]: _h(_Salt, lambda e, a: e.quotas.delete(a.salt)),
    DROPPED_QUALNAME: _h(_Count, lambda e, a: e.dropped(a.count)),
    f"{SM056}.reserve_write": _h(
        _ReserveWrite, lambda e, a: e.reserve(_keys(a.keys), layout_bytes(a.layout_desc))
    ),
    f"{SM056}.finish_write": _h(_Keys, lambda e, a: e.finish(_keys(a.keys))),
    f"{SM056}.submit_prefetch_task": _h(_SubmitPrefetch, _submit_prefetch),
    f"{SM056}.finish_read_prefetched": _h(
        _FinishRead, lambda e, a: e.l1.unlock_read(_keys(a.keys), a.read_locks)
    ),
    f"{SM056}.read_prefetched_results.__enter__": _h(_Keys, lambda e, a: e.read_enter(_keys(a.keys))),
    f"{SM056}.read_prefetched_results.__exit__": _h(_Keys, lambda e, a: e.read_exit(_keys(a.keys))),
}

LOOKUP_QUALNAMES = frozenset({_Q["run_job_now"], _Q["prefetch"], f"{SM056}.submit_prefetch_task"})
STEP_QUALNAMES = frozenset({_Q["step"]})
