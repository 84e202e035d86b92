"""The KV-event log behind `subscribe_kv_events` (wire-protocol.md §5.10).

A bounded log of `stored` / `removed` records with sequence numbers from 1. `incarnation` (the server's
start time in ns) changes on restart so subscribers know to resync. It is also an EventSink: L1 removals
(eviction, clear, delete) become `removed` records of their model.

Memory: a record keeps its chunk's tokens as one `array` of 4-byte ids (a list of Python ints costs ~10x
that), and the log is bounded by `max_bytes` (an estimate of what its records hold) as well as by record
count, dropping the oldest first, so its footprint stays flat under any traffic.
"""

from __future__ import annotations

import collections
import threading
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.events import L1Removed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.events import StorageEvent


@dataclass(frozen=True, slots=True)
class KVRecord:
    """One log record; the fields of the wire's `KVEventRecord`."""

    seq: int
    kind: str
    medium: str
    model_name: str
    block_hashes: list[bytes]
    parent_block_hash: bytes | None
    token_ids: array[int]

    @property
    def nbytes(self) -> int:
        """Estimated memory held by the record (objects, hashes, tokens)."""
        hashes = sum(len(h) + _BYTES_OVERHEAD for h in self.block_hashes)
        return _RECORD_OVERHEAD + hashes + self.token_ids.itemsize * len(self.token_ids)


_RECORD_OVERHEAD = 256  # the record, its hash list and token array objects, the deque slot
_BYTES_OVERHEAD = 40  # one bytes object's header
_NO_TOKENS: array[int] = array("I")


def _compact(tokens: Sequence[int]) -> array[int]:
    """Token ids as one array: 4 bytes each (8 for ids that do not fit 32 bits)."""
    try:
        return array("I", tokens)
    except OverflowError:
        return array("q", tokens)


@dataclass(frozen=True, slots=True)
class KVBatch:
    """What one subscription read returns; the fields of the wire's `KVEventBatch`."""

    enabled: bool
    incarnation: int
    next_cursor: int
    lost: bool
    events: list[KVRecord]


class KVEventLog:
    """Thread-safe bounded log; `capacity` 0 disables it (every read says `enabled=false`).

    Args:
        capacity: Records kept at most.
        incarnation: Changes on every start (subscribers resync).
        max_bytes: Estimated bytes the records may hold at most (the oldest go first).
    """

    def __init__(self, capacity: int, incarnation: int, max_bytes: int = 32 << 20) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.capacity = capacity
        self.incarnation = incarnation
        self.max_bytes = max_bytes
        self._records: collections.deque[KVRecord] = collections.deque()
        self._bytes = 0
        self._next_seq = 1
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether records are kept."""
        return self.capacity > 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
        return self._next_seq

    def __len__(self) -> int:
        return len(self._records) if self.enabled else 0

    @property
    def nbytes(self) -> int:
        """Estimated bytes held by the records."""
        return self._bytes

    def stored(
        self,
        model_name: str,
        digests: Sequence[bytes],
        parents: Sequence[bytes | None],
        tokens: Sequence[Sequence[int]],
    ) -> None:
        """Append one `stored` record per committed chunk (its digest, its parent's and its tokens)."""
        if not self.enabled:
            return
        with self._lock:
            for digest, parent, chunk_tokens in zip(digests, parents, tokens, strict=True):
                self._append("stored", model_name, [digest], parent, _compact(chunk_tokens))

    def publish(self, event: StorageEvent) -> None:
        """EventSink: turn L1 removals into `removed` records, one per model."""
        if not self.enabled or not isinstance(event, L1Removed) or not event.keys:
            return
        by_model: dict[str, dict[bytes, None]] = {}
        for key in event.keys:
            by_model.setdefault(key.model_name, {})[key.chunk_hash] = None
        with self._lock:
            for model, hashes in by_model.items():
                self._append("removed", model, list(hashes), None, _NO_TOKENS)

    def _append(
        self, kind: str, model: str, hashes: list[bytes], parent: bytes | None, tokens: array[int]
    ) -> None:
        record = KVRecord(self._next_seq, kind, "CPU", model, hashes, parent, tokens)
        self._records.append(record)
        self._bytes += record.nbytes
        self._next_seq += 1
        while self._records and (len(self._records) > self.capacity or self._bytes > self.max_bytes):
            self._bytes -= self._records.popleft().nbytes

    def read(self, model_name: str, cursor: int, max_events: int) -> KVBatch:
        """Up to `max_events` records of `model_name` after `cursor`; `lost` when the cursor fell out."""
        if not self.enabled:
            return KVBatch(False, self.incarnation, 0, False, [])
        with self._lock:
            first = self._records[0].seq if self._records else self._next_seq
            lost = cursor + 1 < first and cursor < self._next_seq - 1 and first > 1
            start = max(cursor + 1, first)
            skip = start - first
            out: list[KVRecord] = []
            last = max(cursor, first - 1) if lost else cursor
            for index in range(skip, len(self._records)):
                record = self._records[index]
                last = record.seq
                if record.model_name == model_name:
                    out.append(record)
                    if len(out) >= max_events:
                        break
            if not out and start >= self._next_seq:
                last = max(last, self._next_seq - 1) if cursor >= self._next_seq - 1 else last
            return KVBatch(True, self.incarnation, last, lost, out)

    def has_after(self, cursor: int) -> bool:
        """Whether any record (of any model) was appended after `cursor`."""
        return self.enabled and self._next_seq - 1 > cursor
