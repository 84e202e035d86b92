"""Anonymous-memory L1: the arena when no SHM pool is wanted, backed ahead of use once the server is ready.

Transparent huge pages are not requested: measured on the development VM (THP `madvise`, defrag
`madvise`), backing 1 GiB took the same time with or without MADV_HUGEPAGE (0.6-1.1 s), copies into
backed pages ran at the same speed, and a copy into pages not yet backed was 2-5x slower with it (the
kernel compacts memory to find huge pages on the fault path).

With a CUDA device the arena is page-locked with `cudaHostRegister` so GPU copies run at full speed:
all at once when not lazy, else the first `init_size_bytes` at start and further steps of that size as
`ensure_pinned` is asked for higher offsets. Without CUDA no pinning happens (as LMCache downgrades lazy
pinning on non-CUDA hosts). The CUDA branch is not exercised by CI (no GPU there).
"""

from __future__ import annotations

import logging
import mmap
import threading
from typing import Any

from lmcache.adapters import lazy_torch
from lmcache.adapters.memory._mapped import L1MemoryError, MappedL1Memory, close_quietly

logger = logging.getLogger(__name__)


def _cudart() -> Any:
    """The CUDA runtime bindings torch exposes (untyped in torch's stubs)."""
    return lazy_torch.load().cuda.cudart()


class AnonymousL1Memory(MappedL1Memory):
    """L1 arena in anonymous process memory.

    Args:
        size_bytes: Arena size (`--l1-size-gb`).
        use_lazy: Pin in steps of `init_size_bytes` (`--l1-use-lazy`), else all at once.
        init_size_bytes: Pinned at start and per step when lazy (`--l1-init-size-gb`).
        pin: Page-lock with CUDA; None = when a CUDA device is available.
    """

    kind = "anonymous"

    def __init__(
        self, size_bytes: int, *, use_lazy: bool = True, init_size_bytes: int = 0, pin: bool | None = None
    ) -> None:
        self._map = mmap.mmap(-1, max(size_bytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        super().__init__(self._map, size_bytes, self._unmap, populate=True)
        self.pinned_bytes = 0
        self._pinned_regions: list[int] = []
        self._pin_lock = threading.Lock()
        self._pin = lazy_torch.cuda_available() if pin is None else pin
        step = init_size_bytes if use_lazy and 0 < init_size_bytes < size_bytes else size_bytes
        self._pin_step = step
        if self._pin:
            self.ensure_pinned(step)

    def ensure_pinned(self, upto: int) -> None:
        """Make sure `[0, upto)` is page-locked (no-op without pinning); grows in `init_size` steps."""
        if not self._pin:
            return
        with self._pin_lock:
            while self.pinned_bytes < min(upto, self.size_bytes):
                start = self.pinned_bytes
                length = min(self._pin_step, self.size_bytes - start)
                ptr = self.address + start
                err = _cudart().cudaHostRegister(ptr, length, 0)
                if int(err) != 0:
                    raise L1MemoryError(f"cudaHostRegister of {length} bytes failed (error {int(err)})")
                self._pinned_regions.append(ptr)
                self.pinned_bytes += length
                logger.info("Pinned %d of %d L1 bytes", self.pinned_bytes, self.size_bytes)

    def _unmap(self, released: bool) -> None:
        if self._pinned_regions:
            cudart = _cudart()
            for ptr in self._pinned_regions:
                cudart.cudaHostUnregister(ptr)
            self._pinned_regions.clear()
        if released:
            close_quietly(self._map.close)
