"""dax: byte-addressable persistent memory (Device-DAX, a file on a DAX file system, CXL memory) via mmap.

The first `max_dax_size_gb` of `device_path` are mapped `MAP_SHARED_VALIDATE | MAP_SYNC` (stores reach
the persistence domain without a page-cache writeback); where the kernel or file system refuses MAP_SYNC
(tmpfs, a plain file, which the tests use in place of a DAX device) it falls back to plain `MAP_SHARED`
with a warning, and each store is flushed with msync. The mapping is cut into `slot_bytes` slots, one
object (header + payload) per slot at its start; copies in and out are numpy copies (the GIL released)
on `num_*_workers` threads. A regular file smaller than the size is extended (mode 0600).

The index survives restart without a separate checkpoint: at start-up every slot's header is parsed in
place (a memory read per slot) and slots holding a sound header are adopted; payloads are verified on
load. A store writes the payload before the header (one flush for both: a torn pair fails its checksum),
and delete/quarantine zero the header's magic, so a freed slot is never taken for an object.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._slots import SlotL2Base
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import (
    FIXED_SIZE,
    MAX_KEY_LEN,
    CorruptObjectError,
    check_payload_fits,
    copy_payload,
    parse_header,
    parse_key_name,
    verify_payload,
)
from lmcache.domain.units import gb_to_bytes

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = ("DaxL2Adapter",)

logger = logging.getLogger(__name__)
MAP_SHARED_VALIDATE = 0x03
MAP_SYNC = 0x80000
_PAGE = mmap.PAGESIZE


def map_device(path: str, size: int) -> tuple[mmap.mmap, bool]:
    """Map `size` bytes of `path`; returns (mapping, synchronous). Extends a smaller regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise L2ConfigError(f"dax: cannot open device_path {path!r}: {exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size < size:
            os.ftruncate(fd, size)
        try:
            return mmap.mmap(fd, size, flags=MAP_SHARED_VALIDATE | MAP_SYNC), True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP):
                raise
        logger.warning(
            "dax L2 %s: MAP_SYNC is not supported here (not a DAX device or file system); "
            "using MAP_SHARED and msync after each store",
            path,
        )
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED), False
    except OSError as exc:
        raise L2ConfigError(f"dax: cannot map {size} bytes of {path!r}: {exc}") from exc
    finally:
        os.close(fd)


class DaxL2Adapter(SlotL2Base):
    """Persistent-memory L2 tier; see the module docstring."""

    kind = "dax"
    log = logger

    def __init__(
        self,
        device_path: str,
        max_dax_size_gb: float,
        slot_bytes: int,
        num_store_workers: int = 1,
        num_lookup_workers: int = 1,
        num_load_workers: int = 4,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        size = gb_to_bytes(max_dax_size_gb)
        if slot_bytes > size:
            raise L2ConfigError(f"dax: slot_bytes {slot_bytes} exceeds max_dax_size_gb ({size} bytes)")
        self.device_path = device_path
        self.map, self.synchronous = map_device(device_path, size)
        workers = num_store_workers + num_lookup_workers + num_load_workers
        super().__init__(size // slot_bytes, slot_bytes, workers, persist_enabled)
        self.adopt(self._scan())
        logger.info("dax L2 %s: %d slots, %d objects found", device_path, self.n_slots, len(self._index))

    def _scan(self) -> list[tuple[ObjectKey, int, int]]:
        found = []
        probe = min(self.slot_bytes, FIXED_SIZE + MAX_KEY_LEN)
        for slot in range(self.n_slots):
            start = slot * self.slot_bytes
            if self.map[start : start + 4] != b"LMKV":
                continue
            try:
                header = parse_header(self.map[start : start + probe])
                if header.total_size <= self.slot_bytes:
                    found.append((parse_key_name(header.key_name.decode()), slot, header.total_size))
            except (CorruptObjectError, ValueError):
                continue
        return found

    def _slot_offset(self, slot: int) -> int:
        return slot * self.slot_bytes

    def _flush(self, start: int, length: int) -> None:
        if not self.synchronous:
            aligned = start - start % _PAGE
            self.map.flush(aligned, length + start - aligned)

    def _write_object(self, slot: int, header: bytes, payload: memoryview) -> None:
        start = slot * self.slot_bytes
        body = start + len(header)
        with memoryview(self.map) as whole, whole[body : body + payload.nbytes] as target:
            copy_payload(target, payload)
        self.map[start : start + len(header)] = header  # after the payload; a torn pair fails its checksum
        self._flush(start, len(header) + payload.nbytes)

    def _read_slot(self, slot: int, size: int, key: ObjectKey, dest: memoryview, exact: bool) -> int:
        start = slot * self.slot_bytes
        header = parse_header(self.map[start : start + min(size, FIXED_SIZE + MAX_KEY_LEN)])
        check_payload_fits(header.payload_size, dest, exact)
        if header.total_size != size:
            raise CorruptObjectError("object size differs from the index")
        dest = dest[: header.payload_size]
        with memoryview(self.map) as whole, whole[start + header.header_len : start + size] as view:
            copy_payload(dest, view)  # no view of the mapping outlives this block (close() unmaps)
        verify_payload(header, key, dest)
        return header.payload_size

    def _invalidate_slot(self, slot: int) -> None:
        start = slot * self.slot_bytes
        self.map[start : start + 4] = b"\0\0\0\0"
        self._flush(start, 4)

    async def close(self) -> None:
        """Finish copies, drop the objects unless `persist_enabled`, unmap."""
        if self.map.closed:
            return
        await self.drain()
        self._pool.shutdown(wait=True)
        self.map.flush()
        self.map.close()
