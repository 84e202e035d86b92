"""FakeL1Memory: a bytearray arena, so domain tests move real bytes without mapping memory.

`tensor` imports torch only when asked for (the transfer adapters' tests), so domain tests stay torch-free.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from lmcache.ports.l1_memory import L1Memory


class FakeL1Memory:
    """An in-process arena of `size_bytes` zero bytes."""

    def __init__(self, size_bytes: int) -> None:
        self._buf = bytearray(size_bytes)
        self._tensor: torch.Tensor | None = None
        self.closed = False

    @property
    def size_bytes(self) -> int:
        return len(self._buf)

    @property
    def address(self) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(self._buf))

    @property
    def tensor(self) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("fake L1 memory is closed")
        if self._tensor is None:
            import torch

            self._tensor = torch.frombuffer(self._buf, dtype=torch.uint8)
        return self._tensor

    def view(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > len(self._buf):
            raise ValueError(f"extent [{offset}, {offset + size}) outside the arena")
        if self.closed:
            raise RuntimeError("fake L1 memory is closed")
        return memoryview(self._buf)[offset : offset + size]

    def close(self) -> None:
        self.closed = True
        self._tensor = None


_check: L1Memory = FakeL1Memory(16)
