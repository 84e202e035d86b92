"""Read-write mappings of an engine's POSIX SHM segments (wire-protocol.md §4.2).

The engine owns its segments: we map them by name and unmap on unregister, and never unlink them. We use
`os.open` + `mmap` rather than `multiprocessing.shared_memory`, whose resource tracker would unlink the
engine's segment when this process exits. A fresh mapping has no page-table entries, so the first
store or retrieve would fault once per 4 KiB page of the engine's KV; registration maps them all in
instead (`madvise(MADV_POPULATE_WRITE)`, ~30 ms per GiB of the engine's pages), off the request path.
Measured with the published 0.5.6 bench shape (32 segments of 32 MiB): a first store right after
registration took 100-112 ms while a background populate per segment was still running, 33-58 ms
once the pages were mapped.
"""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lmcache.adapters.memory.populate import PagePopulator, mapping_address

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
else:
    from lmcache.adapters.lazy_torch import torch

__all__ = ("OwnedSegments", "ShmSegment", "ShmSegmentError")

SHM_DIR = "/dev/shm"
logger = logging.getLogger(__name__)


class ShmSegmentError(OSError):
    """A segment that cannot be opened or is smaller than announced."""


class ShmSegment:
    """One mapped segment; `tensor()` views it as the engine's tensor without copying.

    Args:
        name: Segment name, with or without the leading `/`.
        nbytes: Bytes to map (the segment's announced size).
        shm_dir: Where POSIX SHM lives.
    """

    def __init__(self, name: str, nbytes: int, shm_dir: str = SHM_DIR) -> None:
        clean = name.lstrip("/")
        if not clean or "/" in clean or nbytes <= 0:
            raise ShmSegmentError(f"invalid SHM segment {name!r} of {nbytes} bytes")
        self.name = clean
        path = Path(shm_dir) / clean
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise ShmSegmentError(f"cannot open SHM segment {name!r}: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            if size < nbytes:
                raise ShmSegmentError(f"SHM segment {name!r} holds {size} bytes, {nbytes} announced")
            self._mmap: mmap.mmap | None = mmap.mmap(
                fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        finally:
            os.close(fd)
        self.nbytes = nbytes
        self._bytes: torch.Tensor | None = torch.frombuffer(self._mmap, dtype=torch.uint8)
        PagePopulator(mapping_address(self._mmap), nbytes, f"segment {clean}").run_now()

    def tensor(
        self, dtype: torch.dtype, shape: tuple[int, ...], stride: tuple[int, ...], offset: int
    ) -> torch.Tensor:
        """The engine's tensor over this segment (elements of `dtype`, strides and offset in elements)."""
        if self._bytes is None:
            raise ShmSegmentError(f"SHM segment {self.name!r} is closed")
        itemsize = torch.empty((), dtype=dtype).element_size()
        usable = (self.nbytes // itemsize) * itemsize
        return self._bytes[:usable].view(dtype).as_strided(shape, stride, offset)

    def close(self) -> None:
        """Unmap; views still alive keep the pages until they are dropped. Idempotent."""
        self._bytes = None
        if self._mmap is None:
            return
        try:
            self._mmap.close()
        except BufferError:
            logger.debug("SHM segment %s still has views; unmapped when they are dropped", self.name)
        self._mmap = None


class OwnedSegments:
    """The segments a transfer's views live on, closed once with it.

    Both CPU transfers (the KV copies and CacheBlend's scatter) own their segments this way: `close` empties
    the list before closing, so a second `close` of the transfer closes nothing twice; items without a
    `close` are skipped.
    """

    def __init__(self, segments: Sequence[object] = ()) -> None:
        self._segments = list(segments)

    def close(self) -> None:
        """Close every segment still held; idempotent."""
        segments, self._segments = self._segments, []
        for segment in segments:
            close = getattr(segment, "close", None)
            if close is not None:
                close()
