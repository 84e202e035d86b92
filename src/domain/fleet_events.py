"""L2 event batches from servers: de-duplication by (instance, sequence number) and application.

Each server numbers its event batches 1, 2, 3, ... and retries a batch until the coordinator answers, so
the same batch may arrive twice. `EventSequencer` remembers, per instance, every sequence number applied:
a floor below which all numbers were applied, plus the applied numbers above it. A batch whose number was
applied is a duplicate; a batch that arrives out of order (3 before 2) is still applied once. A number far
ahead of the floor (a gap of lost batches, e.g. dropped by a full client buffer) moves the floor up.

Registration resets an instance's sequence (`reset`): a restarted server numbers from 1 again.

Threading: not thread-safe; owned by the coordinator's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lmcache.domain.fleet_directory import KeyDirectory
    from lmcache.domain.keys import ObjectKey

__all__ = ("EventSequencer", "L2Event", "L2EventType", "apply_events")

MAX_OUT_OF_ORDER = 4096  # applied numbers kept above the floor before it is forced up


class L2EventType(StrEnum):
    """What happened to an L2 object on a server."""

    STORE = "store"
    LOOKUP = "lookup"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class L2Event:
    """One L2 event: its type, the object's key, and (for `store`) the object's size in bytes."""

    type: L2EventType
    key: ObjectKey
    nbytes: int = 0


@dataclass(slots=True)
class _Seen:
    floor: int = 0  # every seq <= floor was applied
    above: set[int] = field(default_factory=set)


class EventSequencer:
    """Per-instance record of applied batch sequence numbers."""

    def __init__(self, window: int = MAX_OUT_OF_ORDER) -> None:
        self._window = window
        self._seen: dict[str, _Seen] = {}

    def accept(self, instance_id: str, seq: int) -> bool:
        """Claim batch `seq` of `instance_id`; True the first time, False for a duplicate.

        Raises:
            ValueError: When `seq` is below 1.
        """
        if seq < 1:
            raise ValueError(f"seq must be >= 1, got {seq}")
        seen = self._seen.setdefault(instance_id, _Seen())
        if seq <= seen.floor or seq in seen.above:
            return False
        if seq > seen.floor + self._window:
            # a long gap: the batches in between are lost for good, not late
            seen.floor = seq - 1
            seen.above = {n for n in seen.above if n > seen.floor}
        seen.above.add(seq)
        while seen.floor + 1 in seen.above:
            seen.floor += 1
            seen.above.discard(seen.floor)
        return True

    def last_contiguous(self, instance_id: str) -> int:
        """The highest seq below which every batch of `instance_id` was applied (0 when none)."""
        seen = self._seen.get(instance_id)
        return 0 if seen is None else seen.floor

    def reset(self, instance_id: str) -> None:
        """Forget an instance's numbers (it registered again and restarts at 1)."""
        self._seen.pop(instance_id, None)


def apply_events(directory: KeyDirectory, instance_id: str, events: Iterable[L2Event]) -> int:
    """Apply one batch in order; returns how many events were applied.

    `store` records the size and makes the key most recent; `lookup` touches a known key (an unknown key is
    ignored: its size is not known); `delete` forgets the key and its recorded size.
    """
    applied = 0
    for event in events:
        if event.type is L2EventType.STORE:
            directory.store(event.key, event.nbytes, instance_id)
        elif event.type is L2EventType.LOOKUP:
            directory.touch(event.key)
        else:
            directory.delete(event.key)
        applied += 1
    return applied
