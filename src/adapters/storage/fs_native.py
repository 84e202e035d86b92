"""fs_native: the fs layout and guarantees, read and written with O_DIRECT on `num_workers` threads.

Departure from LMCache's fs_native (a C++ extension): the same job without a native build. O_DIRECT is
on by default (`use_odirect`); the payload of every object starts on a 4096-byte boundary, so a load
reads the header block into a small aligned buffer and the payload straight into the caller's buffer
when that buffer is page-aligned (L1 extents are), with only the unaligned tail through a bounce
buffer: no page-cache copy and no second copy, which is what makes cold reads faster than fs's
buffered read + copy (benchmarks/l2.py --cold). Unaligned buffers, and file systems that refuse
O_DIRECT, take fs's path. io_uring is not used: no maintained binding installs here.
"""

from __future__ import annotations

import errno
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage import _fs_io
from lmcache.adapters.storage._native_mem import address_of
from lmcache.adapters.storage.fs import FsL2Adapter
from lmcache.adapters.storage.object_format import (
    BufferMismatchError,
    CorruptObjectError,
    check_payload_fits,
    parse_header,
    verify_payload,
)

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from lmcache.domain.keys import ObjectKey

__all__ = ("FsNativeL2Adapter", "read_direct_into")

ALIGN = _fs_io.ALIGN


def read_direct_into(path: str, key: ObjectKey, dest: memoryview, exact: bool = True) -> int | None:
    """O_DIRECT read of one object, its payload straight into (the start of) `dest`; returns its size.

    None where that cannot apply (an unaligned buffer or file, a file system refusing O_DIRECT).

    Raises:
        FileNotFoundError, CorruptObjectError: As fs's reader.
    """
    if address_of(dest) % ALIGN:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
    try:
        size = os.fstat(fd).st_size
        head = mmap.mmap(-1, ALIGN)
        if os.preadv(fd, [head], 0) < min(size, ALIGN):
            raise CorruptObjectError("short read")
        header = parse_header(head[:ALIGN])
        check_payload_fits(header.payload_size, dest, exact)
        dest = dest[: header.payload_size]
        if size != header.total_size:
            raise CorruptObjectError("file truncated or padded")
        if header.header_len % ALIGN:
            return None  # written without O_DIRECT alignment: fs's path reads it
        body = dest.nbytes - dest.nbytes % ALIGN
        done = 0
        while done < body:
            got = os.preadv(fd, [dest[done:body]], header.header_len + done)
            if got <= 0:
                raise CorruptObjectError("short read")
            done += got
        if body < dest.nbytes:
            tail = mmap.mmap(-1, ALIGN)
            if os.preadv(fd, [tail], header.header_len + body) < dest.nbytes - body:
                raise CorruptObjectError("short read")
            dest[body:] = memoryview(tail)[: dest.nbytes - body]
        verify_payload(header, key, dest)
        return header.payload_size
    finally:
        os.close(fd)


class FsNativeL2Adapter(FsL2Adapter):
    """fs with O_DIRECT by default, `num_workers` I/O threads and copy-free aligned loads."""

    def __init__(
        self,
        base_path: str,
        num_workers: int = 4,
        relative_tmp_dir: str = "",
        use_odirect: bool = True,
        read_ahead_size: int | None = None,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        super().__init__(
            base_path,
            relative_tmp_dir or None,
            read_ahead_size,
            use_odirect,
            max_capacity_gb,
            shared,
            eviction,
            persist_enabled,
        )
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-fs-native-l2")

    def _direct_supported(self) -> bool:
        """Whether the directory's file system accepts O_DIRECT (tmpfs does not)."""
        probe = self.tmp / f".odirect-probe-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600))
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)
        return True

    def _load_job(
        self, key: ObjectKey, buf: memoryview, cancelled: threading.Event, exact: bool
    ) -> Callable[[], int | bool]:
        fallback = super()._load_job(key, buf, cancelled, exact)
        if not self.odirect:
            return fallback
        path = self._path(key)

        def job() -> int | bool:
            if cancelled.is_set():
                return False
            try:
                size = read_direct_into(path, key, buf, exact)
                if size is not None:
                    return size
            except BufferMismatchError:
                raise
            except CorruptObjectError:
                pass  # fs's path re-reads it and quarantines it the usual way
            return fallback()

        return job
