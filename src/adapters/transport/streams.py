"""KV-event subscriptions with credit flow control (wire-protocol.md §1.7, §5.10).

Owned by the socket thread: the first batch goes out at once; each later batch needs one `ack`;
`cancel`, a new subscription of the same instance, its unregistration or reaping end the stream with a
payload-less `[uid, op]` message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from lmcache.adapters.transport.wire_types import KVEventBatch, KVEventRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.kv_events import KVBatch, KVEventLog

__all__ = ("Subscriptions",)

_encoder = msgspec.msgpack.Encoder()


@dataclass(slots=True)
class _Sub:
    identity: bytes
    uid: bytes
    op: bytes
    instance_id: int
    model_name: str
    cursor: int
    max_events: int
    credits: int = 0


def _encode(batch: KVBatch) -> bytes:
    events = [
        KVEventRecord(
            r.seq, r.kind, r.medium, r.model_name, r.block_hashes, r.parent_block_hash, r.token_ids.tolist()
        )
        for r in batch.events
    ]
    return _encoder.encode(
        KVEventBatch(batch.enabled, batch.incarnation, batch.next_cursor, batch.lost, events)
    )


class Subscriptions:
    """Streams keyed by (identity, uid frame); at most one per instance."""

    def __init__(self, log: KVEventLog, send: Callable[[list[bytes]], None]) -> None:
        self._log = log
        self._send = send
        self._subs: dict[tuple[bytes, bytes], _Sub] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(
        self,
        identity: bytes,
        uid: bytes,
        op: bytes,
        instance_id: int,
        model: str,
        cursor: int,
        max_events: int,
    ) -> None:
        """Open a stream and send its first batch; a disabled log sends one batch and ends."""
        if cursor < 0 or not 1 <= max_events <= 1024:
            raise ValueError("cursor must be >= 0 and max_events in 1..1024")
        self.close_instance(instance_id)
        sub = _Sub(identity, uid, op, instance_id, model, cursor, max_events)
        batch = self._log.read(model, cursor, max_events)
        self._send([identity, uid, op, _encode(batch)])
        if not batch.enabled:
            self._send([identity, uid, op])
            return
        sub.cursor = batch.next_cursor
        self._subs[(identity, uid)] = sub

    def control(self, identity: bytes, uid: bytes, message: bytes) -> None:
        """Handle `ack` (one more batch) or `cancel` (end the stream); unknown streams are ignored."""
        sub = self._subs.get((identity, uid))
        if sub is None:
            return
        if message == b"ack":
            sub.credits = 1
        elif message == b"cancel":
            self._end((identity, uid))

    def close_instance(self, instance_id: int) -> None:
        """End the instance's stream, if any."""
        for key in [k for k, s in self._subs.items() if s.instance_id == instance_id]:
            self._end(key)

    def _end(self, key: tuple[bytes, bytes]) -> None:
        sub = self._subs.pop(key)
        self._send([sub.identity, sub.uid, sub.op])

    def pump(self) -> None:
        """Send a batch to every stream that has credit and new records of its model."""
        for sub in list(self._subs.values()):
            if sub.credits <= 0 or not self._log.has_after(sub.cursor):
                continue
            batch = self._log.read(sub.model_name, sub.cursor, sub.max_events)
            if not batch.events and not batch.lost:
                sub.cursor = batch.next_cursor
                continue
            sub.credits -= 1
            sub.cursor = batch.next_cursor
            self._send([sub.identity, sub.uid, sub.op, _encode(batch)])

    def close_all(self) -> None:
        """End every stream (shutdown)."""
        for key in list(self._subs):
            self._end(key)
