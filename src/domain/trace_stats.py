"""What a replay observed, the clock it runs on, and the event sink that counts for it."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmcache.domain.events import AllocationFailed, EvictionReason, L1Removed, L1WriteCommitted

if TYPE_CHECKING:
    from lmcache.domain.events import StorageEvent

__all__ = ("ReplayClock", "ReplayCounter", "ReplayStats")

_EVICTED = frozenset({EvictionReason.WATERMARK, EvictionReason.ON_DEMAND, EvictionReason.QUOTA})


class ReplayClock:
    """The replay's time: the recorded time of the call being replayed (never goes backwards)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        """The current replay time."""
        return self.now


@dataclass
class ReplayStats:
    """What a replay observed."""

    lookups: int = 0
    lookup_chunks: int = 0
    hit_chunks: int = 0
    lookup_bytes: int = 0
    hit_bytes: int = 0
    l1_hit_objects: int = 0
    l2_hit_objects: int = 0
    written_back: int = 0
    reads: int = 0
    read_misses: int = 0
    read_bytes: int = 0
    written_objects: int = 0
    written_bytes: int = 0
    evicted_objects: int = 0
    evicted_bytes: int = 0
    removed_other: int = 0
    allocation_failures: int = 0
    peak_used_bytes: int = 0
    dropped_records: int = 0
    per_lookup: array[int] = field(default_factory=lambda: array("q"))

    @property
    def hit_rate(self) -> float:
        """Lookup hit rate over chunks (prefix chunks / chunks asked for)."""
        return self.hit_chunks / self.lookup_chunks if self.lookup_chunks else 0.0

    @property
    def byte_hit_rate(self) -> float:
        """Lookup hit rate over bytes."""
        return self.hit_bytes / self.lookup_bytes if self.lookup_bytes else 0.0


class ReplayCounter:
    """The replay engine's EventSink: counts evictions and allocation failures."""

    def __init__(self, stats: ReplayStats) -> None:
        self.stats = stats

    def publish(self, event: StorageEvent) -> None:
        """Count one event (writes, evictions and other removals, allocation failures)."""
        if type(event) is L1WriteCommitted:
            self.stats.written_objects += len(event.keys)
            self.stats.written_bytes += event.nbytes
        elif type(event) is L1Removed:
            if event.reason in _EVICTED:
                self.stats.evicted_objects += len(event.keys)
                self.stats.evicted_bytes += event.nbytes
            else:
                self.stats.removed_other += len(event.keys)
        elif type(event) is AllocationFailed:
            self.stats.allocation_failures += 1
