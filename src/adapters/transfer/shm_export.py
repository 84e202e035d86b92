"""Client side of CPU registration (wire-protocol.md §4.2): move a KV tensor into a POSIX SHM segment.

The segment `/lmcache_kv_<pid>_<n>` is created exclusively with mode 0600 and sized to the tensor's
storage; the returned tensor views it, so the server's writes are visible at once. The creator owns the
segment and unlinks it (`SharedKVTensor.close`), the server never does.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
from pathlib import Path

import torch

from lmcache.adapters.transport.wire_types import CpuShmDescriptor, TensorMetadata

__all__ = ("SharedKVTensor",)

_counter = itertools.count()
SHM_DIR = "/dev/shm"


class SharedKVTensor:
    """A CPU tensor living in its own SHM segment, with the descriptor that registers it.

    Args:
        source: The tensor to migrate (its values are copied).
        shm_dir: Where POSIX SHM lives.
    """

    def __init__(self, source: torch.Tensor, shm_dir: str = SHM_DIR) -> None:
        source = source.contiguous()
        nbytes = source.numel() * source.element_size()
        self.name = f"/lmcache_kv_{os.getpid()}_{next(_counter)}"
        self._path = Path(shm_dir) / self.name.lstrip("/")
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            self._mmap: mmap.mmap | None = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        raw = torch.frombuffer(self._mmap, dtype=torch.uint8)
        self.tensor = raw.view(source.dtype).view(source.shape)
        self.tensor.copy_(source)
        self.nbytes = nbytes

    @property
    def descriptor(self) -> CpuShmDescriptor:
        """The `cpu_shm` descriptor of this tensor."""
        t = self.tensor
        meta = TensorMetadata(
            str(t.dtype).removeprefix("torch."), list(t.shape), list(t.stride()), int(t.storage_offset())
        )
        return CpuShmDescriptor(self.name, self.nbytes, 1, meta)

    def close(self) -> None:
        """Drop the tensor, unmap and unlink the segment; idempotent."""
        if self._mmap is None:
            return
        del self.tensor
        with contextlib.suppress(BufferError):
            self._mmap.close()
        self._mmap = None
        self._path.unlink(missing_ok=True)
