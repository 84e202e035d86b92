"""Value types of sessions: the lookup grid, the prefetch job and the session record."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.hashing import HashChain


@dataclass(frozen=True, slots=True)
class LookupGrid:
    """Which objects a lookup covers: one row per (object group, kv_rank), one column per chunk.

    Attributes:
        model_name: The model of every key.
        kv_ranks: Ranks covered (all ranks of the world for a scheduler lookup).
        group_ids: Object groups of the registered layout.
        cache_salt: The tenant.
        num_kv_readers: Read locks taken per object by the lookup.
    """

    model_name: str
    kv_ranks: tuple[int, ...]
    group_ids: tuple[int, ...] = (0,)
    cache_salt: str = ""
    num_kv_readers: int = 1

    def rows(self, digests: Sequence[bytes]) -> list[list[ObjectKey]]:
        """The grid's keys, one list per (group, rank) row, in chunk order."""
        return [
            [ObjectKey(d, self.model_name, rank, group, self.cache_salt) for d in digests]
            for group in self.group_ids
            for rank in self.kv_ranks
        ]

    def keys_for(self, digests: Sequence[bytes], ranks: Sequence[int] | None = None) -> list[ObjectKey]:
        """Every key of the given chunks for `ranks` (default: all of the grid's) and all groups."""
        chosen = self.kv_ranks if ranks is None else ranks
        return [
            ObjectKey(d, self.model_name, rank, group, self.cache_salt)
            for d in digests
            for group in self.group_ids
            for rank in chosen
        ]


class PrefetchJob:
    """The result of one lookup's prefetch: set once by the controller, read by the status ops.

    Thread-safe: `set_result` from the storage loop, `wait` / `done` from worker threads. The Event a
    waiter blocks on is made only when someone waits: one job per lookup, and a threading.Event (a
    Condition and two locks) costs several microseconds of a lookup that mostly nobody waits on.
    """

    __slots__ = ("_done", "_event", "_lock", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._event: threading.Event | None = None
        self.result = 0

    @property
    def done(self) -> bool:
        """True once the result is set."""
        return self._done

    def set_result(self, hit_chunks: int) -> None:
        """Record the hit count (chunks); later calls are ignored."""
        with self._lock:
            if self._done:
                return
            self.result = hit_chunks
            self._done = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout_s: float | None) -> bool:
        """Block until done or `timeout_s` (real time; for `wait_prefetch_status`); True when done."""
        with self._lock:
            if self._done:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout_s)


@dataclass(slots=True)
class Session:
    """One request's state; its fields are guarded by `lock`."""

    request_id: str
    created_at: float
    chain: HashChain
    lookup: LookupGrid | None = None
    lookup_chunks: int = 0
    job: PrefetchJob | None = None
    hit_chunks: int | None = None
    freed_chunks: set[int] = field(default_factory=set)
    released_ranks: set[int] = field(default_factory=set)
    instances: set[int] = field(default_factory=set)  # workers that stored or retrieved for the request
    lock: threading.Lock = field(default_factory=threading.Lock)
