"""FakeL1Memory: a bytearray arena, so domain tests move real bytes without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcache.ports.l1_memory import L1Memory


class FakeL1Memory:
    """An in-process arena of `size_bytes` zero bytes."""

    def __init__(self, size_bytes: int) -> None:
        self._buf = bytearray(size_bytes)
        self.closed = False

    @property
    def size_bytes(self) -> int:
        return len(self._buf)

    def view(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > len(self._buf):
            raise ValueError(f"extent [{offset}, {offset + size}) outside the arena")
        return memoryview(self._buf)[offset : offset + size]

    def close(self) -> None:
        self.closed = True


_check: L1Memory = FakeL1Memory(16)
