"""One L1 index entry: the object's extent and its lock state (kept tiny: a million of them is normal).

Four slots, 64 bytes: the extent as two ints (the offset int is the same object the arena keys its
allocation by, and sizes are interned by the arena, so neither costs more) and the lock state packed
into one small int, `readers << 2 | temporary << 1 | ready`. `benchmarks/storage_engine.py` measures the
index memory per object.
"""

from __future__ import annotations

from lmcache.domain.arena import Extent

_READY = 1
_TEMPORARY = 2
READY_BIT = _READY  # for hot loops that test the state without a property call
TEMPORARY_BIT = _TEMPORARY
_FLAGS = 3


class Entry:
    """Lock state of one object.

    Attributes:
        offset: Where the object's bytes start in the arena.
        size: The extent's size in bytes.
        deadline: Expiry of the write reservation, or of the read locks; 0.0 when unlocked.
    """

    __slots__ = ("deadline", "offset", "size", "state")

    def __init__(self, offset: int, size: int, deadline: float) -> None:
        self.offset = offset
        self.size = size
        self.deadline = deadline
        self.state = 0  # write-locked: not ready, no readers

    @property
    def extent(self) -> Extent:
        """The object's bytes in the arena."""
        return Extent(self.offset, self.size)

    @property
    def ready(self) -> bool:
        """False while write-locked (reserved), True once committed and visible."""
        return bool(self.state & _READY)

    @property
    def readers(self) -> int:
        """Live read locks (meaningful while `deadline` is in the future)."""
        return self.state >> 2

    @readers.setter
    def readers(self, count: int) -> None:
        self.state = count << 2 | (self.state & _FLAGS)

    @property
    def temporary(self) -> bool:
        """Leave L1 when the last read lock is released."""
        return bool(self.state & _TEMPORARY)

    @temporary.setter
    def temporary(self, value: bool) -> None:
        self.state = self.state | _TEMPORARY if value else self.state & ~_TEMPORARY

    @staticmethod
    def committed_state(read_locks: int, temporary: bool) -> int:
        """The packed state of a committed (ready, visible) object with `read_locks` readers."""
        return read_locks << 2 | (_TEMPORARY if temporary else 0) | _READY

    @property
    def locked(self) -> bool:
        """Write-locked, or read-locked with readers (expiry is checked by the caller)."""
        return self.state != _READY and self.state != _READY | _TEMPORARY
