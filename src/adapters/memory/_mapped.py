"""Shared base of the L1 memory adapters: one mapped buffer exposed as a torch uint8 tensor.

Every adapter maps its arena once (anonymous mmap, file mmap, POSIX SHM) and hands out zero-copy views:
`view` (a memoryview, the L1Memory port) and `tensor_view` (a torch slice, for the transfer adapters).
Memory media (anonymous, SHM) are backed ahead of use by a `PagePopulator` once the server is ready
(`start_populating`); every view and `ensure_backed` backs its own range first when the walk has not
reached it, so no copy into L1 takes page faults one page at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import TYPE_CHECKING

from lmcache.adapters.memory.populate import PagePopulator

if TYPE_CHECKING:
    import mmap
    from collections.abc import Callable

    import torch
else:
    from lmcache.adapters.lazy_torch import torch

logger = logging.getLogger(__name__)
_NO_HOLD = contextlib.nullcontext()


class L1MemoryError(RuntimeError):
    """The L1 arena cannot be created with the requested medium."""


def close_quietly(closer: Callable[[], None]) -> bool:
    """Run `closer` (an mmap/SHM close); False when views handed out earlier still pin the mapping."""
    try:
        closer()
    except BufferError:
        logger.warning("L1 arena closed while views are still in use; unmapping when they are dropped")
        return False
    return True


class MappedL1Memory:
    """An arena over a writable buffer; subclasses map it and release it in `_release`.

    Args:
        buffer: The mapped memory (mmap or SHM buffer), at least `size_bytes` long.
        size_bytes: Arena size.
        release: Called once by `close` with True when every buffer export is gone (the mapping may be
            closed) or False when callers still hold views (close it later; an SHM name can still go).
        populate: Back the pages ahead of use (memory media); False for files and devices, whose pages
            are the file's.
    """

    kind = "memory"

    def __init__(
        self,
        buffer: mmap.mmap | memoryview,
        size_bytes: int,
        release: Callable[[bool], None],
        *,
        populate: bool = False,
    ) -> None:
        if size_bytes <= 0:
            raise L1MemoryError(f"L1 size must be > 0 bytes, got {size_bytes}")
        self._size = size_bytes
        self._root: memoryview | None = memoryview(buffer)
        self._mv: memoryview | None = self._root[:size_bytes]
        self._tensor: torch.Tensor | None = None  # made on first use: torch loads after the ready line
        self._address = ctypes.addressof(ctypes.c_char.from_buffer(self._mv))
        self._release = release
        self._populator = PagePopulator(self._address, size_bytes, f"L1 {self.kind}") if populate else None

    @property
    def size_bytes(self) -> int:
        """Arena size in bytes."""
        return self._size

    @property
    def address(self) -> int:
        """The arena's first byte in this process's address space."""
        return self._address

    @property
    def tensor(self) -> torch.Tensor:
        """The whole arena as one uint8 tensor (no copy), made on the first call."""
        tensor = self._tensor
        if tensor is None:
            if self._mv is None:
                raise L1MemoryError("L1 memory is closed")
            tensor = self._tensor = torch.frombuffer(self._mv, dtype=torch.uint8)
        return tensor

    @property
    def populated_bytes(self) -> int | None:
        """Bytes backed ahead of use from the arena's start; None when the medium is not populated."""
        return None if self._populator is None else self._populator.populated_bytes

    def start_populating(self) -> None:
        """Back the whole arena in the background (after readiness); a no-op for files and devices."""
        if self._populator is not None:
            self._populator.start()

    def ensure_backed(self, offset: int, size: int) -> None:
        """Back `[offset, offset + size)` now unless already backed (before a copy into fresh extents)."""
        if self._populator is not None:
            self._populator.ensure(offset, size)

    def is_backed(self, offset: int, size: int) -> bool:
        """Whether `[offset, offset + size)` is known to be backed (always, for files and devices)."""
        return self._populator is None or self._populator.covers(offset, size)

    def copying(self) -> contextlib.AbstractContextManager[None]:
        """A context around a request's copy: the background walk takes no step inside it."""
        return _NO_HOLD if self._populator is None else self._populator.hold()

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self._size:
            raise ValueError(f"extent [{offset}, {offset + size}) is outside the {self._size}-byte arena")

    def view(self, offset: int, size: int) -> memoryview:
        """A writable memoryview of `[offset, offset + size)`, aliasing the arena."""
        self._check(offset, size)
        if self._mv is None:
            raise L1MemoryError("L1 memory is closed")
        self.ensure_backed(offset, size)
        return self._mv[offset : offset + size]

    def tensor_view(self, offset: int, size: int) -> torch.Tensor:
        """A uint8 tensor over `[offset, offset + size)`, aliasing the arena."""
        self._check(offset, size)
        tensor = self.tensor
        self.ensure_backed(offset, size)
        return tensor.narrow(0, offset, size)

    def close(self) -> None:
        """Drop the tensor and views, then release the mapping; idempotent."""
        if self._mv is None or self._root is None:
            return
        if self._populator is not None:
            self._populator.stop()  # before the mapping goes: the walk writes into it
            self._populator = None
        self._tensor = None
        released = True
        try:
            self._mv.release()
            self._root.release()
        except BufferError:
            released = False
            logger.warning("L1 arena closed while views are still in use; unmapping when they are dropped")
        self._mv = self._root = None
        self._release(released)
