"""Blocking file I/O of the fs adapter, run on its thread pool: atomic writes, verified reads, index scans.

Each object moves with bulk syscalls: one `writev` of header + payload (or one `pwrite` of an aligned
bounce buffer with O_DIRECT), one `preadv` straight into the caller's buffer. O_DIRECT needs aligned
memory, offsets and sizes, which the caller's L1 view does not promise, so that path goes through a
page-aligned anonymous mmap kept per thread; where the file system refuses O_DIRECT (tmpfs) it falls
back to buffered I/O.

Objects hold tenants' KV: files are created 0600 and directories 0700 (owner only, whatever the umask).
A file that fails its checks is moved aside by `quarantine`, only if the path still names the file that
was read (a concurrent rewrite of the same key is never moved).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lmcache.adapters.storage.object_format import (
    MIN_READ,
    CorruptObjectError,
    ObjectHeader,
    check_payload_fits,
    copy_payload,
    parse_header,
    verify_payload,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lmcache.domain.keys import ObjectKey

__all__ = (
    "DIR_MODE",
    "FILE_MODE",
    "make_dir",
    "object_files",
    "quarantine",
    "read_header",
    "read_object",
    "sizes_of",
    "unlink_all",
    "write_object",
)

logger = logging.getLogger(__name__)
ALIGN = 4096
FILE_MODE = 0o600
DIR_MODE = 0o700
QUARANTINE_MAX_FILES = 100  # beyond this, quarantined objects are deleted instead of kept for a person
_warned_odirect = threading.Event()
_bounces = threading.local()


def _bounce(size: int) -> mmap.mmap:
    """A page-aligned buffer of at least `size` bytes, kept per thread (a new mapping faults per 4 KiB)."""
    buf: mmap.mmap | None = getattr(_bounces, "buf", None)
    if buf is None or len(buf) < size:
        buf = _bounces.buf = mmap.mmap(-1, max(size, ALIGN))
    return buf


def _open(path: str, flags: int, odirect: bool) -> tuple[int, bool]:
    """Open with O_DIRECT when asked and supported; returns (fd, direct)."""
    if odirect:
        try:
            return os.open(path, flags | os.O_DIRECT, FILE_MODE), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            if not _warned_odirect.is_set():
                _warned_odirect.set()
                logger.warning("fs L2: O_DIRECT not supported under %s; using buffered I/O", path)
    return os.open(path, flags, FILE_MODE), False


def make_dir(path: Path) -> None:
    """Create a directory (and missing parents) readable by the owner only; an existing one is left as is."""
    if not path.is_dir():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        path.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask


def _write_all(fd: int, parts: list[memoryview]) -> None:
    offset = 0
    total = sum(p.nbytes for p in parts)
    while offset < total:
        # Rebuild the vector from the first unwritten byte (a short write is rare: ENOSPC, signals).
        vec, skip = [], offset
        for part in parts:
            if skip >= part.nbytes:
                skip -= part.nbytes
                continue
            vec.append(part[skip:])
            skip = 0
        written = os.pwritev(fd, vec, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        offset += written


def write_object(
    tmp_path: str,
    final_path: str,
    header: bytes,
    payload: memoryview,
    odirect: bool,
    cancelled: threading.Event,
) -> bool:
    """Write header + payload to `tmp_path`, fsync, then rename onto `final_path` (atomic visibility).

    Returns:
        False when `cancelled` was set before the rename (the temp file is removed, nothing visible).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd, direct = _open(tmp_path, flags, odirect)
    try:
        size = len(header) + payload.nbytes
        if direct:
            aligned = -(-size // ALIGN) * ALIGN
            bounce = _bounce(aligned)
            bounce[: len(header)] = header
            copy_payload(memoryview(bounce)[len(header) : size], payload)
            _write_all(fd, [memoryview(bounce)[:aligned]])
            os.ftruncate(fd, size)
        else:
            _write_all(fd, [memoryview(header), payload])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp_path)
        raise
    os.close(fd)
    # The payload view was read completely above; past this check the caller may reuse it.
    if cancelled.is_set():
        _unlink_quietly(tmp_path)
        return False
    final = Path(final_path)
    make_dir(final.parent)
    Path(tmp_path).rename(final)
    return True


def _unlink_quietly(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _read_into(fd: int, dest: memoryview, offset: int) -> int:
    done = 0
    while done < dest.nbytes:
        got = os.preadv(fd, [dest[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def read_header(path: str) -> tuple[ObjectHeader, int]:
    """Parse a file's header; returns (header, file size). Raises CorruptObjectError or OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return parse_header(os.pread(fd, MIN_READ, 0)), size
    finally:
        os.close(fd)


def read_object(
    path: str, key: ObjectKey, dest: memoryview, odirect: bool, read_ahead: int | None, exact: bool = True
) -> int:
    """Read and verify one object into `dest` (into its start when not `exact`); returns the payload size.

    Raises:
        FileNotFoundError: No such object.
        CorruptObjectError: Bad header, wrong key, wrong size, truncated file or checksum mismatch.
    """
    fd, direct = _open(path, os.O_RDONLY, odirect)
    try:
        stat = os.fstat(fd)
        size = stat.st_size
        if read_ahead:
            os.posix_fadvise(fd, 0, min(read_ahead, size), os.POSIX_FADV_WILLNEED)
        if direct:
            return _read_direct(fd, size, key, dest, exact)
        header = parse_header(os.pread(fd, MIN_READ, 0))
        _check_sizes(header, size, dest, exact)
        payload = dest[: header.payload_size]
        if _read_into(fd, payload, header.header_len) != payload.nbytes:
            raise CorruptObjectError("short read")
        verify_payload(header, key, payload)
        return header.payload_size
    except CorruptObjectError as exc:
        exc.file_id = (stat.st_dev, stat.st_ino)
        raise
    finally:
        os.close(fd)


def quarantine(path: str, file_id: tuple[int, int] | None, where: Path) -> str | None:
    """Move a damaged object file into `where` if `path` still is the file `file_id` names.

    Returns:
        The file's new path (or "deleted" when `where` already holds QUARANTINE_MAX_FILES files); None when
        the path now names another file (rewritten meanwhile) or is gone.
    """
    try:
        current = Path(path).stat()
    except FileNotFoundError:
        return None
    if file_id is not None and (current.st_dev, current.st_ino) != file_id:
        return None
    make_dir(where)
    if sum(1 for _ in os.scandir(where)) >= QUARANTINE_MAX_FILES:
        _unlink_quietly(path)
        return "deleted"
    target = where / f"{Path(path).name}.{os.getpid()}-{time.time_ns()}"
    try:
        Path(path).rename(target)
    except FileNotFoundError:
        return None
    return str(target)


def _check_sizes(header: ObjectHeader, file_size: int, dest: memoryview, exact: bool) -> None:
    check_payload_fits(header.payload_size, dest, exact)
    if file_size != header.total_size:
        raise CorruptObjectError("file truncated or padded")


def _read_direct(fd: int, size: int, key: ObjectKey, dest: memoryview, exact: bool) -> int:
    aligned = max(ALIGN, -(-size // ALIGN) * ALIGN)
    view = memoryview(_bounce(aligned))[:aligned]  # page-aligned, reused by this thread
    if _read_into(fd, view, 0) < size:
        raise CorruptObjectError("short read")
    header = parse_header(view)
    _check_sizes(header, size, dest, exact)
    payload = view[header.header_len : size]
    verify_payload(header, key, payload)
    copy_payload(dest[: header.payload_size], payload)
    return header.payload_size


def sizes_of(paths: list[str]) -> list[int | None]:
    """File sizes, None for missing files."""
    out: list[int | None] = []
    for path in paths:
        try:
            out.append(Path(path).stat().st_size)
        except FileNotFoundError:
            out.append(None)
    return out


def unlink_all(paths: list[str]) -> list[bool]:
    """Unlink files; True for each that existed."""
    out = []
    for path in paths:
        try:
            Path(path).unlink()
            out.append(True)
        except FileNotFoundError:
            out.append(False)
    return out


def object_files(base: str) -> Iterator[tuple[str, str]]:
    """(path, digest) of every object file under `base` (`<2 hex>/<digest>.kv`; staging dirs are skipped)."""
    for top in os.scandir(base):
        if top.is_dir() and len(top.name) == 2:
            for entry in os.scandir(top.path):
                if entry.name.endswith(".kv"):
                    yield entry.path, entry.name[:-3]
