"""Server side of `--coordinator-l2-event-reporting`: ordered, numbered, retried batches of L2 events.

Callers (the L2 store/prefetch/delete paths, on any thread) call `record_store` / `record_lookup` /
`record_delete`: a lock and a deque append, never I/O, never blocking. The buffer is bounded; when it is
full the oldest event is dropped and counted (`dropped`), so a coordinator that is down for long costs
bounded memory. The owner (`CoordinatorClient`, on its own thread) calls `flush`: it posts the events in
batches numbered 1, 2, 3, ...; a batch that fails is kept and sent again, with the same number, before any
later event, so the coordinator applies each batch once and in order. A batch the coordinator rejects as
malformed (4xx other than 404/408/429) is dropped and counted rather than retried forever.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = ("L2EventReporter",)

logger = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({404, 408, 429})


class L2EventReporter:
    """Bounded buffer of L2 events plus the batch in flight.

    Args:
        instance_id: The server's instance id (sent with every batch).
        max_buffered: Events kept while the coordinator is unreachable; older ones are dropped beyond it.
        max_batch: Events per POST.
    """

    def __init__(self, instance_id: str, max_buffered: int = 100_000, max_batch: int = 5_000) -> None:
        if max_buffered < 1 or max_batch < 1:
            raise ValueError("max_buffered and max_batch must be >= 1")
        self.instance_id = instance_id
        self.max_buffered = max_buffered
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, ObjectKey, int]] = deque()
        self._pending: dict[str, Any] | None = None  # the batch being delivered (owner thread only)
        self._next_seq = 1
        self.dropped = 0
        self.rejected = 0
        self.sent_batches = 0
        self.sent_events = 0

    # -- producers (any thread, non-blocking) ---------------------------------------------------------------

    def _record(self, kind: str, key: ObjectKey, nbytes: int) -> None:
        with self._lock:
            if len(self._queue) >= self.max_buffered:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((kind, key, nbytes))

    def record_store(self, key: ObjectKey, nbytes: int) -> None:
        """An object of `nbytes` was stored to L2."""
        self._record("store", key, nbytes)

    def record_lookup(self, key: ObjectKey) -> None:
        """An L2 object was looked up (hit)."""
        self._record("lookup", key, 0)

    def record_delete(self, key: ObjectKey) -> None:
        """An L2 object was deleted (the coordinator subtracts the size it recorded at store time)."""
        self._record("delete", key, 0)

    @property
    def buffered(self) -> int:
        """Events waiting (the batch in flight included)."""
        with self._lock:
            queued = len(self._queue)
        return queued + (len(self._pending["events"]) if self._pending else 0)

    # -- the owner's side ----------------------------------------------------------------------------------

    def _take_batch(self) -> dict[str, Any] | None:
        if self._pending is None:
            with self._lock:
                n = min(len(self._queue), self.max_batch)
                taken = [self._queue.popleft() for _ in range(n)]
            if not taken:
                return None
            self._pending = {
                "instance_id": self.instance_id,
                "seq": self._next_seq,
                "events": [_encode(kind, key, nbytes) for kind, key, nbytes in taken],
            }
            self._next_seq += 1
        return self._pending

    async def flush(self, http: httpx.AsyncClient, base_url: str, max_batches: int = 16) -> bool:
        """Send buffered events, oldest first, up to `max_batches` batches.

        Returns:
            True when everything sent was accepted (or nothing was buffered); False when a batch failed and
            is kept for the next call.
        """
        for _ in range(max_batches):
            batch = self._take_batch()
            if batch is None:
                return True
            try:
                response = await http.post(f"{base_url}/l2/events", json=batch)
            except httpx.HTTPError:
                return False
            if response.is_success or (
                400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX
            ):
                if not response.is_success:
                    self.rejected += len(batch["events"])
                    logger.warning(
                        "Coordinator rejected L2 event batch %d (HTTP %d: %s); dropped",
                        batch["seq"],
                        response.status_code,
                        response.text[:200],
                    )
                else:
                    self.sent_batches += 1
                    self.sent_events += len(batch["events"])
                self._pending = None
                continue
            return False
        return True


def _encode(kind: str, key: ObjectKey, nbytes: int) -> dict[str, Any]:
    return {
        "type": kind,
        "key": {
            "chunk_hash_hex": key.chunk_hash.hex(),
            "model_name": key.model_name,
            "kv_rank": key.kv_rank,
            "object_group_id": key.object_group_id,
            "cache_salt": key.cache_salt,
        },
        "bytes": nbytes,
    }
