"""One L1 index entry: the object's extent and its lock state (kept tiny: a million of them is normal)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcache.domain.arena import Extent


class Entry:
    """Lock state of one object.

    Attributes:
        extent: Where the object's bytes live in the arena.
        ready: False while write-locked (reserved), True once committed and visible.
        readers: Live read locks (meaningful while `deadline` is in the future).
        deadline: Expiry of the write reservation, or of the read locks; 0.0 when unlocked.
        temporary: Leave L1 when the last read lock is released.
    """

    __slots__ = ("deadline", "extent", "readers", "ready", "temporary")

    def __init__(self, extent: Extent, deadline: float) -> None:
        self.extent = extent
        self.ready = False
        self.readers = 0
        self.deadline = deadline
        self.temporary = False

    @property
    def locked(self) -> bool:
        """Write-locked, or read-locked with readers (expiry is checked by the caller)."""
        return not self.ready or self.readers > 0
