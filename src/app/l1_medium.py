"""Which L1 medium the L1 flags ask for (`--gds-l1-path`, `--l1-devdax-path`, `--shm-name`).

The rule the container's `l1_memory` Selector (`storage_container.py`) keys on; the container builds the
chosen adapter.

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

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("L1MemoryError", "l1_medium", "shm_room")

logger = logging.getLogger(__name__)
SHM_DIR = "/dev/shm"


def shm_room(path: str = SHM_DIR) -> int:
    """Free bytes in the SHM file system (0 when it is absent)."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    return info.f_bavail * info.f_frsize


def l1_medium(
    size_bytes: int,
    *,
    devdax_path: Path | None = None,
    shm_name: str | None = None,
    want_shm_pool: bool = False,
    gds_path: Path | None = None,
    shm_dir: str = SHM_DIR,
) -> str:
    """The medium for L1: `gds`, `devdax`, `shm` or `anonymous` (module docstring).

    Args:
        size_bytes: `--l1-size-gb` in bytes.
        devdax_path: `--l1-devdax-path`.
        shm_name: `--shm-name` (None = automatic name, "" = no pool).
        want_shm_pool: True when the engine-driven transfer path is loaded.
        gds_path: `--gds-l1-path`.
        shm_dir: Where POSIX SHM lives, checked for room.
    """
    if gds_path:
        return "gds"
    if devdax_path:
        return "devdax"
    if want_shm_pool and shm_name != "":
        if shm_room(shm_dir) >= size_bytes:
            return "shm"
        logger.warning(
            "%s cannot hold the %d-byte L1; engine-driven transfers fall back to pickle", shm_dir, size_bytes
        )
    return "anonymous"
