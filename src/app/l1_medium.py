"""Pick the L1 medium from the L1 flags (`--gds-l1-path`, `--l1-devdax-path`, `--shm-name`, lazy pinning).

Part of the composition root (the container calls it): which adapter runs is the app's decision.

Order: GDS slab when `--gds-l1-path` is set; else the DAX mapping when `--l1-devdax-path` is set; else a
named SHM pool when the engine-driven path wants one and `--shm-name` is not `""` (falling back to
anonymous memory with a warning when /dev/shm cannot hold the whole L1, as LMCache does); else anonymous
memory.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from lmcache.adapters.memory._mapped import L1MemoryError
from lmcache.adapters.memory.anonymous import AnonymousL1Memory
from lmcache.adapters.memory.devdax import DevdaxL1Memory
from lmcache.adapters.memory.gds import GdsL1Memory
from lmcache.adapters.memory.shm import ShmL1Memory

if TYPE_CHECKING:
    from lmcache.adapters.memory._mapped import MappedL1Memory

__all__ = ("L1MemoryError", "open_l1_memory", "shm_room")

logger = logging.getLogger(__name__)
SHM_DIR = "/dev/shm"


def shm_room(path: str = SHM_DIR) -> int:
    """Free bytes in the SHM file system (0 when it is absent)."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    return info.f_bavail * info.f_frsize


def open_l1_memory(
    size_bytes: int,
    *,
    use_lazy: bool = True,
    init_size_bytes: int = 0,
    devdax_path: str | None = None,
    shm_name: str | None = None,
    want_shm_pool: bool = False,
    gds_path: str | None = None,
    shm_dir: str = SHM_DIR,
) -> MappedL1Memory:
    """Build the L1 memory adapter the flags ask for.

    Args:
        size_bytes: `--l1-size-gb` in bytes.
        use_lazy: `--l1-use-lazy` (pinning in steps on CUDA hosts).
        init_size_bytes: `--l1-init-size-gb` in bytes.
        devdax_path: `--l1-devdax-path`.
        shm_name: `--shm-name` (None = automatic name, "" = no pool).
        want_shm_pool: True when the engine-driven transfer path is loaded.
        gds_path: `--gds-l1-path`.
        shm_dir: Where POSIX SHM lives, checked for room.

    Raises:
        L1MemoryError: When the chosen medium cannot be created (GDS without cuFile, a bad DAX path, ...).
    """
    if gds_path:
        return GdsL1Memory(gds_path, size_bytes)
    if devdax_path:
        return DevdaxL1Memory(devdax_path, size_bytes)
    if want_shm_pool and shm_name != "":
        if shm_room(shm_dir) >= size_bytes:
            return ShmL1Memory(size_bytes, shm_name)
        logger.warning(
            "%s cannot hold the %d-byte L1; engine-driven transfers fall back to pickle", shm_dir, size_bytes
        )
    return AnonymousL1Memory(size_bytes, use_lazy=use_lazy, init_size_bytes=init_size_bytes)
