"""Device-DAX / file-backed L1: the arena is a shared mapping of `--l1-devdax-path`.

A regular file shorter than the arena is extended; a /dev/dax character device is mapped as is (its size
must cover the arena). The mapping is MAP_SHARED, so the bytes live in the device or file.
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

from lmcache.adapters.memory._mapped import L1MemoryError, MappedL1Memory, close_quietly


class DevdaxL1Memory(MappedL1Memory):
    """L1 arena mapped from a DAX device or a file.

    Args:
        path: The device or file (`--l1-devdax-path`).
        size_bytes: Arena size (`--l1-size-gb`).
    """

    kind = "devdax"

    def __init__(self, path: str | Path, size_bytes: int) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise L1MemoryError(f"--l1-devdax-path {self.path}: cannot open ({exc.strerror})") from exc
        try:
            info = os.fstat(self._fd)
            if stat.S_ISREG(info.st_mode) and info.st_size < size_bytes:
                os.ftruncate(self._fd, size_bytes)
            self._map = mmap.mmap(self._fd, size_bytes, flags=mmap.MAP_SHARED)
        except (OSError, ValueError) as exc:
            os.close(self._fd)
            msg = f"--l1-devdax-path {self.path}: cannot map {size_bytes} bytes ({exc})"
            raise L1MemoryError(msg) from exc
        super().__init__(self._map, size_bytes, self._unmap)

    def _unmap(self, released: bool) -> None:
        if released:
            close_quietly(self._map.close)
        os.close(self._fd)
