"""GDS L1 tier check: `--gds-l1-path` needs the NVIDIA cuFile stack and a CUDA device.

Without them construction fails at start-up with an error naming the flag and what is missing (the
spec: "fails at start-up with a clear error"). With them, the slab file `<path>/lmcache_gds_slab.bin` is
sized and mapped as the arena. Departure: the host maps the slab through the page cache; moving extents
with cuFile DMA belongs to the GPU transfer adapter, which is not written yet.
"""

from __future__ import annotations

import ctypes.util
from pathlib import Path

from lmcache.adapters import lazy_torch
from lmcache.adapters.memory._mapped import L1MemoryError
from lmcache.adapters.memory.devdax import DevdaxL1Memory

SLAB_NAME = "lmcache_gds_slab.bin"


def cufile_problem() -> str | None:
    """What is missing for GDS, or None when libcufile and a CUDA device are both present."""
    if ctypes.util.find_library("cufile") is None:
        return "libcufile (the NVIDIA cuFile / GPUDirect Storage library) was not found"
    if not lazy_torch.cuda_available():
        return "no CUDA device is available"
    return None


class GdsL1Memory(DevdaxL1Memory):
    """L1 arena in the GDS slab file under `--gds-l1-path`.

    Args:
        directory: The NVMe directory (`--gds-l1-path`).
        size_bytes: Slab size (`--l1-size-gb`).

    Raises:
        L1MemoryError: When the cuFile stack or a CUDA device is missing, or the slab cannot be mapped.
    """

    kind = "gds"

    def __init__(self, directory: str | Path, size_bytes: int) -> None:
        problem = cufile_problem()
        if problem is not None:
            raise L1MemoryError(f"--gds-l1-path {directory}: GDS L1 cannot start: {problem}")
        super().__init__(Path(directory) / SLAB_NAME, size_bytes)
