"""raw_block: fixed slots on a raw block device or a preallocated file, O_DIRECT, an on-device index.

Layout: `[meta region: meta_total_bytes][slot 0][slot 1]...`, each slot `slot_bytes` holding one object
(header padded to `header_bytes`, then the payload). I/O is O_DIRECT through page-aligned bounce buffers
(`block_align`; the L1 views promise no alignment), one pwrite / pread per object, on `num_*_workers`
threads. Where O_DIRECT is refused (tmpfs) it falls back to buffered I/O with a warning. A missing file
is created with `capacity_bytes` (mode 0600); `capacity_bytes: 0` uses the whole device or file.

The index survives restart as a checkpoint in the meta region: two halves written alternately, each a
header (magic, sequence number, length, xxh3) and the msgpack list of (slot, size, name); the valid half
with the higher sequence wins. It is written every `meta_checkpoint_interval_sec` when changed (with
`meta_enable_periodic`) and at close, after an fdatasync of the slots. Objects stored after the last
checkpoint are lost in a crash (their slots are simply free again); with `meta_verify_on_load` each
checkpointed slot's header is re-read at start-up and entries whose slot now holds something else are
dropped. `io_engine: io_uring` is refused at start-up: no maintained io_uring binding installs here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import stat
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import xxhash

from lmcache.adapters.storage._slots import SlotL2Base
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import (
    CorruptObjectError,
    check_payload_fits,
    copy_payload,
    key_name,
    parse_header,
    parse_key_name,
    verify_payload,
)

if TYPE_CHECKING:
    from lmcache.domain.keys import ObjectKey

__all__ = ("RawBlockL2Adapter",)

logger = logging.getLogger(__name__)
_META = struct.Struct("<4sHQQ16s")  # magic, version, sequence, body length, xxh3-128(body)
_MAGIC = b"LMRB"


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


_local = threading.local()


def _aligned(size: int) -> mmap.mmap:
    """A page-aligned buffer of at least `size` bytes, reused per thread (no page faults per object)."""
    size = max(size, mmap.PAGESIZE)
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = mmap.mmap(-1, size)
    return buf


class RawBlockL2Adapter(SlotL2Base):
    """Block-device L2 tier; see the module docstring."""

    kind = "raw_block"
    log = logger

    def __init__(
        self,
        device_path: str,
        slot_bytes: int,
        capacity_bytes: int = 0,
        use_odirect: bool = True,
        block_align: int = 4096,
        header_bytes: int = 4096,
        meta_total_bytes: int = 268435456,
        meta_checkpoint_interval_sec: int = 60,
        meta_enable_periodic: bool = True,
        load_checkpoint_on_init: bool = True,
        meta_verify_on_load: bool = True,
        io_engine: str = "posix",
        iouring_queue_depth: int = 256,
        num_store_workers: int = 2,
        num_lookup_workers: int = 1,
        num_load_workers: int = 4,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        if io_engine != "posix":
            raise L2ConfigError(
                f"raw_block: io_engine {io_engine!r} is not available in this build; use 'posix'"
            )
        for name, value in (("slot_bytes", slot_bytes), ("header_bytes", header_bytes)):
            if value % block_align:
                raise L2ConfigError(f"raw_block: {name} ({value}) must be a multiple of block_align")
        if header_bytes >= slot_bytes:
            raise L2ConfigError("raw_block: header_bytes must be smaller than slot_bytes")
        self.device_path = device_path
        self.align = block_align
        self.header_align = header_bytes
        self.meta_bytes = _round_up(meta_total_bytes, 2 * block_align)
        self.fd, self.direct = self._open(device_path, capacity_bytes, use_odirect)
        size = capacity_bytes or self._device_size()
        n_slots = (size - self.meta_bytes) // slot_bytes
        if n_slots < 1:
            os.close(self.fd)
            raise L2ConfigError(
                f"raw_block: {device_path} has room for no slot ({size} bytes, {self.meta_bytes} of metadata)"
            )
        workers = num_store_workers + num_lookup_workers + num_load_workers
        super().__init__(n_slots, slot_bytes, workers, persist_enabled)
        self._sequence = 0
        self.interval = meta_checkpoint_interval_sec if meta_enable_periodic else 0
        self._ticker: asyncio.Task[None] | None = None
        if load_checkpoint_on_init:
            self.adopt(self._load_checkpoint(meta_verify_on_load))
        logger.info("raw_block L2 %s: %d slots, %d objects indexed", device_path, n_slots, len(self._index))

    # -- device --------------------------------------------------------------------------------------
    @staticmethod
    def _open(path: str, capacity: int, odirect: bool) -> tuple[int, bool]:
        flags = os.O_RDWR | (0 if Path(path).exists() else os.O_CREAT)
        try:
            if odirect:
                try:
                    fd = os.open(path, flags | os.O_DIRECT, 0o600)
                    direct = True
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    logger.warning("raw_block L2 %s: O_DIRECT refused here; using buffered I/O", path)
                    fd, direct = os.open(path, flags, 0o600), False
            else:
                fd, direct = os.open(path, flags, 0o600), False
        except OSError as exc:
            raise L2ConfigError(f"raw_block: cannot open device_path {path!r}: {exc}") from exc
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and capacity and info.st_size < capacity:
            os.ftruncate(fd, capacity)  # sparse: blocks are allocated as slots are written
        return fd, direct

    def _device_size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def _slot_offset(self, slot: int) -> int:
        return self.meta_bytes + slot * self.slot_bytes

    def _pwrite(self, data: mmap.mmap, length: int, offset: int) -> None:
        view = memoryview(data)[: _round_up(length, self.align) if self.direct else length]
        done = 0
        while done < view.nbytes:
            done += os.pwrite(self.fd, view[done:], offset + done)

    def _pread(self, length: int, offset: int) -> mmap.mmap:
        size = _round_up(length, self.align)
        buf = _aligned(size)
        view = memoryview(buf)
        done = 0
        while done < length:
            got = os.preadv(self.fd, [view[done:size]], offset + done)
            if got == 0:
                break
            done += got
        view.release()
        if done < length:
            raise CorruptObjectError("short read")
        return buf

    # -- slots ---------------------------------------------------------------------------------------
    def _write_object(self, slot: int, header: bytes, payload: memoryview) -> None:
        total = len(header) + payload.nbytes
        bounce = _aligned(_round_up(total, self.align))
        bounce[: len(header)] = header
        copy_payload(memoryview(bounce)[len(header) : total], payload)
        self._pwrite(bounce, total, self._slot_offset(slot))

    def _read_slot(self, slot: int, size: int, key: ObjectKey, dest: memoryview, exact: bool) -> int:
        data = self._pread(size, self._slot_offset(slot))
        view = memoryview(data)
        try:
            header = parse_header(view[: min(size, 4096)])
            check_payload_fits(header.payload_size, dest, exact)
            if header.total_size != size:
                raise CorruptObjectError("object size differs from the index")
            payload = view[header.header_len : size]
            verify_payload(header, key, payload)
            copy_payload(dest[: header.payload_size], payload)
            payload.release()
            return header.payload_size
        finally:
            view.release()

    def _invalidate_slot(self, slot: int) -> None:
        self._pwrite(mmap.mmap(-1, self.align), self.align, self._slot_offset(slot))

    # -- checkpoint ----------------------------------------------------------------------------------
    def _load_checkpoint(self, verify: bool) -> list[tuple[ObjectKey, int, int]]:
        half = self.meta_bytes // 2
        best: tuple[int, list[Any]] | None = None
        for base in (0, half):
            try:
                fixed = self._pread(_META.size, base)[: _META.size]
                magic, _version, seq, length, digest = _META.unpack(fixed)
                if magic != _MAGIC or length > half - _META.size:
                    continue
                body = self._pread(_META.size + length, base)[_META.size : _META.size + length]
                if xxhash.xxh3_128_digest(body) != digest:
                    continue
                if best is None or seq > best[0]:
                    best = (seq, msgspec.msgpack.decode(body))
            except (CorruptObjectError, struct.error, msgspec.DecodeError):
                continue
        if best is None:
            return []
        self._sequence = best[0]
        entries = []
        for slot, size, name in best[1]:
            try:
                key = parse_key_name(name)
            except ValueError:
                continue
            if not verify or self._slot_holds(slot, size, name):
                entries.append((key, slot, size))
        return entries

    def _slot_holds(self, slot: int, size: int, name: str) -> bool:
        try:
            header = parse_header(self._pread(4096, self._slot_offset(slot))[:4096])
        except CorruptObjectError:
            return False
        return header.key_name == name.encode() and header.total_size == size

    def checkpoint(self) -> None:
        """Write the index to the inactive half of the meta region (blocking: run it on the pool)."""
        entries = [[slot, size, key_name(k)] for k, (slot, size) in list(self._index.items())]
        body = msgspec.msgpack.encode(entries)
        half = self.meta_bytes // 2
        if _META.size + len(body) > half:
            logger.warning(
                "raw_block L2: index (%d bytes) exceeds meta_total_bytes/2; not checkpointed", len(body)
            )
            return
        self.dirty = False
        os.fdatasync(self.fd)  # the slots the checkpoint names are on the device first
        self._sequence += 1
        record = _META.pack(_MAGIC, 1, self._sequence, len(body), xxhash.xxh3_128_digest(body)) + body
        buf = _aligned(_round_up(len(record), self.align))
        buf[: len(record)] = record
        self._pwrite(buf, len(record), (self._sequence % 2) * half)
        os.fdatasync(self.fd)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.dirty:
                await asyncio.get_running_loop().run_in_executor(self._pool, self.checkpoint)

    async def store(self, keys: Any, buffers: Any) -> list[bool]:
        """Store (see SlotL2Base); the first store starts the periodic checkpoint."""
        if self.interval and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return await super().store(keys, buffers)

    async def close(self) -> None:
        """Finish I/O, drop objects unless `persist_enabled`, checkpoint, close the device."""
        if self.fd < 0:
            return
        await self.drain()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._pool, self.checkpoint)
        self._pool.shutdown(wait=True)
        os.close(self.fd)
        self.fd = -1
