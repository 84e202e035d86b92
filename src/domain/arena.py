"""Arena accounting: aligned (offset, size) extents inside one L1 arena of N bytes.

The allocator never touches bytes; the L1 memory adapter owns them. Free space is kept as maximal free
runs, indexed three ways so every operation is O(1) amortised (TLSF-like, no scan of pages):
- `_free_start` / `_free_end` map a run's first and one-past-last offset to the run, so a freed extent
  coalesces with both neighbours by two dict lookups;
- `_classes[k]` holds the runs whose size in alignment units has bit length k, and the bitmask
  `_nonempty` finds the smallest class that surely fits (`1 << k` and up) with one bit trick.
Within the request's own class a few runs are tried first (good fit), then a surely-fitting larger run is
split. `alloc_many` carves a request's chunks out of one run (one search and split for the batch, and
back-to-back extents that the KV copies move in one strided call).

Which extents are live (to refuse bad or double frees) is one flat `array('I')` holding each live extent's
size in units at its first unit: 4 bytes per alignment unit (0.1% of the arena at 4 KiB), no per-object
Python objects, and a batch of back-to-back extents is marked by one strided slice assignment. A dict keyed
by byte offsets cost 3x more per insert: offsets are multiples of the alignment, so their hashes (the ints
themselves) collide in the dict's low bits. Sizes are interned, so a million equal-sized objects share one
int. Not thread-safe: the L1 manager calls it under its lock.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

_OWN_CLASS_TRIES = 8
_DENSE_MIN_ALIGN = 4096  # one 4-byte mark per unit costs at most 0.1% of the arena from here up


class _SparseMarks:
    """The marks array's interface over a dict, for alignments finer than 4 KiB.

    There one slot per unit would cost more than 0.1% of the arena. Absent units read 0; writing 0
    removes the unit.
    """

    def __init__(self) -> None:
        self._marks: dict[int, int] = {}

    def __getitem__(self, unit: int) -> int:
        return self._marks.get(unit, 0)

    def __setitem__(self, where: int | slice, value: int | array[int]) -> None:
        if isinstance(where, slice) and isinstance(value, array):
            self._marks.update(zip(range(where.start, where.stop, where.step), value, strict=True))
        elif isinstance(where, int) and isinstance(value, int):
            if value:
                self._marks[where] = value
            else:
                self._marks.pop(where, None)
        else:
            raise TypeError(f"bad mark update {where!r}")


class Extent(NamedTuple):
    """A byte range of the L1 arena: `[offset, offset + size)`, both multiples of the alignment."""

    offset: int
    size: int


class ArenaStats(NamedTuple):
    """Usage of the arena in bytes; `fragmentation` = 1 - largest free run / free bytes (0 when empty)."""

    total_bytes: int
    used_bytes: int
    free_bytes: int
    largest_free: int
    fragmentation: float
    extents: int


class ArenaAllocator:
    """Hands out aligned extents of an arena and takes them back, coalescing free neighbours.

    Args:
        total_bytes: Arena size; rounded down to a multiple of `align_bytes`.
        align_bytes: Alignment of every offset and size (`--l1-align-bytes`), a power of two.
    """

    def __init__(self, total_bytes: int, align_bytes: int = 4096) -> None:
        if align_bytes <= 0 or align_bytes & (align_bytes - 1):
            raise ValueError(f"align_bytes must be a power of two, got {align_bytes}")
        self.align = align_bytes
        self._shift = align_bytes.bit_length() - 1
        self.total_bytes = (total_bytes >> self._shift) << self._shift
        self.used_bytes = 0
        units = self._units = self.total_bytes >> self._shift
        # first unit of a live extent -> its size in units, else 0
        self._live: array[int] | _SparseMarks = (
            array("I", [0]) * units if align_bytes >= _DENSE_MIN_ALIGN else _SparseMarks()
        )
        self._extents = 0
        self._sizes: dict[int, int] = {}  # units -> bytes: one shared int per distinct size
        self._free_start: dict[int, int] = {}  # run start (units) -> run length (units)
        self._free_end: dict[int, int] = {}  # run end (units) -> run start (units)
        self._classes: list[dict[int, int]] = [{} for _ in range(64)]
        self._nonempty = 0
        if units:
            self._add_run(0, units)

    def round_up(self, size: int) -> int:
        """`size` rounded up to the alignment."""
        return ((size + self.align - 1) >> self._shift) << self._shift

    def alloc(self, size: int) -> Extent | None:
        """Allocate an aligned extent of at least `size` bytes.

        Returns:
            The extent (its size rounded up to the alignment), or None when no free run is large enough.
        """
        if size <= 0:
            raise ValueError(f"size must be > 0, got {size}")
        units = (size + self.align - 1) >> self._shift
        found = self._find_run(units)
        if found is None:
            return None
        start, length = found
        self._remove_run(start, length)
        if length > units:
            self._add_run(start + units, length - units)
        nbytes = self._size_of(units)
        self._live[start] = units
        self._extents += 1
        self.used_bytes += nbytes
        return Extent(start << self._shift, nbytes)

    def alloc_many(self, size: int, count: int) -> list[Extent]:
        """`count` back-to-back extents of `size` bytes from one free run, or [] when no run holds them all.

        The caller falls back to `alloc` per extent (which may then find room in several runs).
        """
        if size <= 0:
            raise ValueError(f"size must be > 0, got {size}")
        units = (size + self.align - 1) >> self._shift
        found = self._find_run(units * count) if count > 0 else None
        if found is None:
            return []
        start, length = found
        self._remove_run(start, length)
        if length > units * count:
            self._add_run(start + units * count, length - units * count)
        nbytes = self._size_of(units)
        self._live[start : start + units * count : units] = array("I", [units]) * count
        self._extents += count
        self.used_bytes += count * nbytes
        first = start << self._shift
        return [Extent(offset, nbytes) for offset in range(first, first + count * nbytes, nbytes)]

    def _size_of(self, units: int) -> int:
        nbytes = self._sizes.get(units)
        if nbytes is None:
            nbytes = self._sizes[units] = units << self._shift
        return nbytes

    def free(self, extent: Extent) -> None:
        """Return an extent, merging it with free neighbours.

        Raises:
            ValueError: When the extent was not allocated by this arena (or is freed twice).
        """
        self.free_at(extent.offset, extent.size)

    def free_many(self, extents: Iterable[tuple[int, int]]) -> None:
        """Free `(offset, size)` pairs: checked one by one, then coalesced into runs and returned per run.

        Eviction takes a cold stretch of back-to-back objects, so sorting first lets one run's worth of
        objects cost one free-list update instead of one each.

        Raises:
            ValueError: When a pair was not allocated by this arena (nothing is freed then).
        """
        pairs = sorted(extents)
        live, shift, units = self._live, self._shift, self._units
        for offset, size in pairs:  # all checked before any is freed
            unit = offset >> shift
            if unit << shift != offset or not 0 <= unit < units or size <= 0 or live[unit] << shift != size:
                raise ValueError(f"extent {Extent(offset, size)} is not allocated in this arena")
        self._extents -= len(pairs)
        run_start = run_end = -1
        for offset, size in pairs:
            live[offset >> shift] = 0
            self.used_bytes -= size
            if offset == run_end:
                run_end += size
                continue
            if run_end >= 0:
                self._release(run_start >> self._shift, run_end >> self._shift)
            run_start, run_end = offset, offset + size
        if run_end >= 0:
            self._release(run_start >> self._shift, run_end >> self._shift)

    def free_at(self, offset: int, size: int) -> None:
        """`free(Extent(offset, size))` without building the tuple (the L1 index keeps the two ints)."""
        self._check_live(offset, size)
        self._live[offset >> self._shift] = 0
        self._extents -= 1
        self.used_bytes -= size
        self._release(offset >> self._shift, (offset + size) >> self._shift)

    def _check_live(self, offset: int, size: int) -> None:
        shift = self._shift
        unit = offset >> shift
        if (
            unit << shift != offset
            or not 0 <= unit < self._units
            or size <= 0
            or self._live[unit] << shift != size
        ):
            raise ValueError(f"extent {Extent(offset, size)} is not allocated in this arena")

    def _release(self, start: int, end: int) -> None:
        """Add the free units `[start, end)`, merged with the free runs either side."""
        before = self._free_end.get(start)
        if before is not None:
            self._remove_run(before, start - before)
            start = before
        after = self._free_start.get(end)
        if after is not None:
            self._remove_run(end, after)
            end += after
        self._add_run(start, end - start)

    def largest_free(self) -> int:
        """Largest free run in bytes (scans only the top non-empty size class)."""
        if not self._nonempty:
            return 0
        top = self._classes[self._nonempty.bit_length() - 1]
        return max(top.values()) << self._shift

    def stats(self) -> ArenaStats:
        """Totals, the largest free run and the fragmentation ratio."""
        free = self.total_bytes - self.used_bytes
        largest = self.largest_free()
        frag = 0.0 if free == 0 else 1.0 - largest / free
        return ArenaStats(self.total_bytes, self.used_bytes, free, largest, frag, self._extents)

    def _find_run(self, units: int) -> tuple[int, int] | None:
        own = units.bit_length()
        nonempty = self._nonempty
        if nonempty >> own & 1:
            for tried, (start, length) in enumerate(self._classes[own].items()):
                if length >= units:
                    return start, length
                if tried >= _OWN_CLASS_TRIES:
                    break
        bigger = nonempty >> (own + 1)
        if not bigger:
            return None
        runs = self._classes[own + (bigger & -bigger).bit_length()]
        start, length = runs.popitem()  # O(1); put back so _remove_run sees a consistent index
        runs[start] = length
        return start, length

    def _add_run(self, start: int, length: int) -> None:
        self._free_start[start] = length
        self._free_end[start + length] = start
        cls = length.bit_length()
        self._classes[cls][start] = length
        self._nonempty |= 1 << cls

    def _remove_run(self, start: int, length: int) -> None:
        del self._free_start[start]
        del self._free_end[start + length]
        cls = length.bit_length()
        runs = self._classes[cls]
        del runs[start]
        if not runs:
            self._nonempty &= ~(1 << cls)
