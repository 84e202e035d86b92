"""Addresses of Python buffers and the memory a native transfer client (Mooncake, NIXL) has registered.

Native clients move bytes between registered memory and their store without a Python copy. The L1 arena
is registered once at start-up (`register_l1`, called by the runtime); any other buffer (a test's
bytearray, a benchmark's) is registered for the duration of one call and unregistered after it, so the
adapters work on any buffer and copy-free on L1 extents.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ("RegisteredRanges", "address_of")


def address_of(view: memoryview | np.ndarray[Any, Any]) -> int:
    """The address of a buffer's first byte (read-only buffers included)."""
    array = view if isinstance(view, np.ndarray) else np.frombuffer(view, np.uint8)
    return int(array.ctypes.data)


class RegisteredRanges:
    """Ranges registered with a native client: permanent ones, and per-call ones reference-counted.

    Args:
        register: `(address, size) -> handle` registering memory with the client (raises on failure).
        unregister: `(address, size, handle)` undoing it.
    """

    def __init__(
        self, register: Callable[[int, int], Any], unregister: Callable[[int, int, Any], None]
    ) -> None:
        self._register = register
        self._unregister = unregister
        self._lock = threading.Lock()
        self._starts: list[int] = []  # sorted starts of permanent ranges
        self._ranges: dict[int, tuple[int, Any]] = {}  # start -> (end, handle)
        self._temporary: dict[tuple[int, int], list[Any]] = {}  # (start, size) -> [refcount, handle]

    def add_permanent(self, address: int, size: int) -> None:
        """Register `[address, address + size)` until `close` (idempotent for the same range)."""
        with self._lock:
            if address in self._ranges:
                return
            handle = self._register(address, size)
            bisect.insort(self._starts, address)
            self._ranges[address] = (address + size, handle)

    def covered(self, address: int, size: int) -> bool:
        """Whether a permanent range holds the whole buffer."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return False
        end, _ = self._ranges[self._starts[i]]
        return address + size <= end

    @contextlib.contextmanager
    def hold(self, buffers: Sequence[tuple[int, int]]) -> Iterator[None]:
        """Make every `(address, size)` registered for the block (temporary ones undone after it)."""
        taken: list[tuple[int, int]] = []
        try:
            for address, size in buffers:
                if size == 0 or self.covered(address, size):
                    continue
                with self._lock:
                    entry = self._temporary.get((address, size))
                    if entry is None:
                        entry = self._temporary[(address, size)] = [0, self._register(address, size)]
                    entry[0] += 1
                taken.append((address, size))
            yield
        finally:
            for address, size in taken:
                with self._lock:
                    entry = self._temporary[(address, size)]
                    entry[0] -= 1
                    if entry[0] == 0:
                        del self._temporary[(address, size)]
                        self._unregister(address, size, entry[1])

    def close(self) -> None:
        """Unregister the permanent ranges."""
        with self._lock:
            for start in self._starts:
                end, handle = self._ranges[start]
                with contextlib.suppress(Exception):
                    self._unregister(start, end - start, handle)
            self._starts.clear()
            self._ranges.clear()
