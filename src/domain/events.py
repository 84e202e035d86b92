"""Storage-engine events: what the domain tells telemetry through the EventSink port.

Events are small frozen records, batched per operation (a tuple of keys, not one event per key), so a
million-object eviction publishes one event. Subscribers (Prometheus, the KV-event log, the coordinator
reporter) live in adapters and pick what they need by type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from lmcache.domain.blend_events import BlendLookupFinished, BlendScattered

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey


class EvictionReason(StrEnum):
    """Why objects left L1."""

    WATERMARK = "watermark"  # the background loop passed --eviction-trigger-watermark
    ON_DEMAND = "on_demand"  # an allocation did not fit
    QUOTA = "quota"  # IsolatedLRU: the salt's usage passed its quota
    CLEAR = "clear"  # clear / delete requested
    STORED_TO_L2 = "stored_to_l2"  # skip_l1 store policy
    TEMPORARY = "temporary"  # a prefetched temporary object lost its last reader
    EXPIRED = "expired"  # an expired write reservation was reclaimed


@dataclass(frozen=True, slots=True)
class L1WriteCommitted:
    """Objects became visible in L1."""

    keys: tuple[ObjectKey, ...]
    nbytes: int


@dataclass(frozen=True, slots=True)
class L1WriteAborted:
    """Write reservations were dropped (abort or TTL expiry); their bytes were never visible."""

    keys: tuple[ObjectKey, ...]
    expired: bool


@dataclass(frozen=True, slots=True)
class L1Read:
    """Read locks were requested on `requested` objects, `hits` of them were present."""

    requested: int
    hits: int


@dataclass(frozen=True, slots=True)
class L1Removed:
    """Objects left L1 (eviction, clear, skip_l1, temporary objects)."""

    keys: tuple[ObjectKey, ...]
    nbytes: int
    reason: EvictionReason


@dataclass(frozen=True, slots=True)
class AllocationFailed:
    """An object of `nbytes` could not be placed in L1 even after on-demand eviction."""

    key: ObjectKey
    nbytes: int


@dataclass(frozen=True, slots=True)
class L2Stored:
    """One adapter's result for a store batch."""

    adapter_index: int
    keys: tuple[ObjectKey, ...]
    succeeded: int
    failed: int
    nbytes: int
    sizes: tuple[int, ...] = ()  # per key: the bytes stored, 0 where that key's store failed


@dataclass(frozen=True, slots=True)
class L2Loaded:
    """One prefetch load from an adapter into L1."""

    adapter_index: int
    key: ObjectKey
    ok: bool
    nbytes: int


@dataclass(frozen=True, slots=True)
class L2Deleted:
    """Objects were deleted from one L2 adapter (an admin request or the coordinator's fleet eviction).

    `keys` are only the objects actually removed (missing and pinned ones are not). No sizes: the L2 port
    has none per key, and the coordinator subtracts the size it recorded at store time.
    """

    adapter_index: int
    keys: tuple[ObjectKey, ...]


@dataclass(frozen=True, slots=True)
class L2Evicted(L2Deleted):
    """Per-adapter L2 eviction deleted objects to stay under the adapter's capacity.

    An `L2Deleted`, so whatever follows deletions (the coordinator's directory) follows evictions too.
    """

    nbytes: int = 0  # bytes the eviction freed, as counted by the eviction wrapper


@dataclass(frozen=True, slots=True)
class L2StoreDropped:
    """Store requests dropped because the store queue was full."""

    count: int


@dataclass(frozen=True, slots=True)
class PrefetchCompleted:
    """A lookup's prefetch finished: chunks in the common prefix and where the objects came from."""

    total_chunks: int
    prefix_chunks: int
    l1_hits: int
    l2_hits: int
    l2_errors: int


class TransferKind(StrEnum):
    """Direction of a transfer between an engine and L1."""

    STORE = "store"
    RETRIEVE = "retrieve"


@dataclass(frozen=True, slots=True)
class TransferCompleted:
    """A store or retrieve request finished (`ok` False: refused, partial or failed).

    `tokens` and `nbytes` count what was copied (a store of chunks already present copies nothing);
    `duration_s` is the time the server spent on the request.
    """

    kind: TransferKind
    request_id: str
    model_name: str
    tokens: int
    nbytes: int
    duration_s: float
    ok: bool


@dataclass(frozen=True, slots=True)
class LookupPerformed:
    """A lookup was accepted: the chunk hashes it computed (for the lookup-hash log) and its size.

    `seq_len` is the tokens the lookup covered; `chunk_hashes` are its full chunks' digests, in order.
    """

    request_id: str
    model_name: str
    chunk_size: int
    seq_len: int
    chunk_hashes: tuple[bytes, ...]
    duration_s: float


@dataclass(frozen=True, slots=True)
class WorkerReaped:
    """A silent worker was dropped by the reaper."""

    instance_id: int
    model_name: str


StorageEvent = (
    L1WriteCommitted
    | L1WriteAborted
    | L1Read
    | L1Removed
    | AllocationFailed
    | L2Stored
    | L2Loaded
    | L2Deleted
    | L2StoreDropped
    | PrefetchCompleted
    | TransferCompleted
    | LookupPerformed
    | WorkerReaped
    | BlendLookupFinished
    | BlendScattered
)
