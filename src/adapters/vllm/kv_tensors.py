"""The worker's KV tensors as the server sees them: physical dimension order, SHM migration, descriptors.

CPU tensors (wire-protocol.md §4.2): each distinct backing storage is copied into a new POSIX SHM segment
`/lmcache_kv_<pid>_<n>` (created exclusively, mode 0600), and the storage's data pointer is then swapped
for the segment's pages in place (`UntypedStorage._swap_data_ptr_`). Every view vLLM holds of that
storage, including the per-layer and kernel-block views bound to its attention layers, keeps working and
now lives in shared memory that the server maps by name. Re-pointing only the tensors handed to the
connector (`Tensor.set_`) would leave vLLM's other views on the old memory, so without the swap the
migration refuses instead of serving stale KV. This process owns the segments and unlinks their names at
shutdown; the pages stay mapped for as long as vLLM's tensors live. vLLM kills its workers with SIGKILL
soon after SIGTERM, so that unlink often never runs: each migration first removes the segments of
workers that no longer exist (`remove_stale_segments`), so a restarted vLLM reclaims what the last one
left in /dev/shm.

CUDA tensors (§4.1, §4.3): a `cuda` descriptor built from PyTorch's storage IPC handle.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmcache.adapters.memory.shm_reaper import pid_alive
from lmcache.adapters.transport.wire_types import (
    CpuShmDescriptor,
    CudaDescriptor,
    TensorMetadata,
)
from lmcache.domain.kv_layout import TensorSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("ShmKVStorage", "cuda_descriptor", "migrate_to_shm", "physical", "tensor_spec")

logger = logging.getLogger("lmcache.vllm.worker")
_counter = itertools.count()
SHM_DIR = "/dev/shm"


def physical(tensor: torch.Tensor) -> torch.Tensor:
    """The same tensor with its dimensions ordered by decreasing stride (a metadata-only permute)."""
    strides = tensor.stride()
    order = sorted(range(tensor.dim()), key=lambda d: (-strides[d], d))
    return tensor.permute(order)


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def tensor_spec(tensor: torch.Tensor) -> TensorSpec:
    """The wire view of a tensor already in physical order."""
    return TensorSpec(
        _dtype_name(tensor), tuple(tensor.shape), tuple(tensor.stride()), int(tensor.storage_offset())
    )


def _metadata(tensor: torch.Tensor, device_uuid: str) -> TensorMetadata:
    return TensorMetadata(
        _dtype_name(tensor),
        list(tensor.shape),
        list(tensor.stride()),
        int(tensor.storage_offset()),
        device_uuid,
    )


class ShmKVStorage:
    """One backing storage moved into its own SHM segment.

    Args:
        storage: The storage to move (all its views follow).
        shm_dir: Where POSIX SHM lives.

    Raises:
        RuntimeError: This PyTorch cannot swap a storage's memory in place.
    """

    def __init__(self, storage: torch.UntypedStorage, shm_dir: str = SHM_DIR) -> None:
        if not hasattr(storage, "_swap_data_ptr_"):
            raise RuntimeError(
                "this PyTorch cannot move vLLM's KV cache into shared memory in place; use "
                "lmcache.mp.mp_transfer_mode=lmcache_driven (worker-side copies)"
            )
        self.nbytes = storage.nbytes()
        self.name = f"/lmcache_kv_{os.getpid()}_{next(_counter)}"
        path = Path(shm_dir) / self.name.lstrip("/")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, self.nbytes)
            self._mmap = mmap.mmap(fd, self.nbytes)
        except Exception:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        # The name goes at shutdown or, failing that, when the interpreter exits.
        self._unlink = weakref.finalize(self, _unlink, path)
        pages = torch.frombuffer(self._mmap, dtype=torch.uint8)
        pages.copy_(torch.empty(0, dtype=torch.uint8).set_(storage))
        # The storage now owns the segment's pages (the mapping stays alive through it); `pages` owns the
        # old memory, freed when it goes.
        storage._swap_data_ptr_(pages.untyped_storage())
        logger.info("Migrated CPU KV cache tensor (nbytes=%d) to SHM %s", self.nbytes, self.name)

    def descriptor(self, tensor: torch.Tensor) -> CpuShmDescriptor:
        """The `cpu_shm` descriptor of a view of this storage (in physical order)."""
        view = physical(tensor)
        return CpuShmDescriptor(self.name, self.nbytes, 1, _metadata(view, "cpu"))

    def unlink(self) -> None:
        """Remove the segment's name (the server already mapped it; the pages live on). Idempotent."""
        self._unlink()


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def remove_stale_segments(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink `lmcache_kv_<pid>_<n>` segments whose process is gone; returns their names.

    A server still mapping one keeps its pages until it unmaps them; only the name goes.
    """
    removed = []
    for path in Path(shm_dir).glob("lmcache_kv_*_*"):
        parts = path.name.split("_")
        if len(parts) != 4 or not parts[2].isdigit() or pid_alive(int(parts[2])):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    if removed:
        logger.info("Removed %d SHM segments of exited workers: %s", len(removed), ", ".join(removed))
    return removed


def migrate_to_shm(
    tensors: Sequence[torch.Tensor], shm_dir: str = SHM_DIR
) -> tuple[list[CpuShmDescriptor], list[ShmKVStorage]]:
    """Move the tensors' storages into SHM (each storage once) and describe every tensor."""
    remove_stale_segments(shm_dir)
    by_storage: dict[int, ShmKVStorage] = {}
    descriptors = []
    try:
        for tensor in tensors:
            if tensor.device.type != "cpu":
                raise ValueError(f"expected CPU KV tensors, got one on {tensor.device}")
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            shared = by_storage.get(key)
            if shared is None:
                shared = ShmKVStorage(storage, shm_dir)
                by_storage[storage.data_ptr()] = shared
            descriptors.append(shared.descriptor(tensor))
    except Exception:
        for shared in by_storage.values():
            shared.unlink()
        raise
    return descriptors, list(by_storage.values())


def cuda_descriptor(tensor: torch.Tensor) -> CudaDescriptor:
    """A `cuda` descriptor: PyTorch's storage IPC handle plus the tensor's physical shape and strides."""
    view = physical(tensor)
    handle = list(view.untyped_storage()._share_cuda_())  # type: ignore[no-untyped-call]
    uuid = str(torch.cuda.get_device_properties(view.device).uuid)
    return CudaDescriptor(handle, 1, _metadata(view, uuid))
