"""POSIX shared-memory L1: the arena is one named segment the engine-driven workers map by name.

Names follow wire-protocol.md §5.11: the prefix `lmcache_l1_pool_` is added unless present, a stale
segment with the same name is unlinked first, and the server unlinks the segment on close. `name=None`
picks an automatic name (the spec's "--shm-name unset"); whether a pool is wanted at all (`""` = no pool)
is the caller's decision (see factory.py). Before creating its pool a server removes the automatic pools
of dead servers, and it holds a lock on its own pool while it runs (shm_reaper.py).
"""

from __future__ import annotations

import logging
import os
import secrets
from multiprocessing import resource_tracker, shared_memory

from lmcache.adapters.memory._mapped import L1MemoryError, MappedL1Memory, close_quietly
from lmcache.adapters.memory.shm_reaper import hold_pool_lock, remove_dead_pools

logger = logging.getLogger(__name__)

SHM_PREFIX = "lmcache_l1_pool_"


def shm_pool_name(name: str | None) -> str:
    """The segment name for `--shm-name` (None = automatic), prefix included."""
    if name is None:
        name = f"{os.getpid()}_{secrets.token_hex(4)}"
    if not name:
        raise L1MemoryError("an empty --shm-name means no SHM pool; do not build ShmL1Memory for it")
    return name if name.startswith(SHM_PREFIX) else SHM_PREFIX + name


def _unlink_stale(name: str) -> None:
    try:
        stale = shared_memory.SharedMemory(name=name, create=False)
    except FileNotFoundError:
        return
    logger.warning("Unlinking stale SHM segment %s", name)
    stale.close()
    stale.unlink()


class ShmL1Memory(MappedL1Memory):
    """L1 arena in a named POSIX shared-memory segment, owned (and unlinked) by this process.

    Backed ahead of use like anonymous memory (`start_populating`); huge pages apply only where the
    administrator enabled them for shmem (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`).

    Args:
        size_bytes: Arena size (`--l1-size-gb`).
        name: `--shm-name`; None = an automatic name.
    """

    kind = "shm"

    def __init__(self, size_bytes: int, name: str | None = None) -> None:
        self.name = shm_pool_name(name)
        remove_dead_pools()
        _unlink_stale(self.name)
        try:
            self._shm = shared_memory.SharedMemory(name=self.name, create=True, size=size_bytes)
        except OSError as exc:
            msg = f"cannot create SHM segment {self.name} of {size_bytes} bytes ({exc})"
            raise L1MemoryError(msg) from exc
        self._unlinked = False
        self._lock_fd = hold_pool_lock(self.name)
        buf = self._shm.buf
        if buf is None:  # pragma: no cover - only after close()
            raise L1MemoryError(f"SHM segment {self.name} has no buffer")
        super().__init__(buf, size_bytes, self._unmap, populate=True)

    def _unmap(self, released: bool) -> None:
        if released:
            close_quietly(self._shm.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if not self._unlinked:
            self._unlinked = True
            try:
                self._shm.unlink()
            except FileNotFoundError:
                resource_tracker.unregister(f"/{self.name}", "shared_memory")
