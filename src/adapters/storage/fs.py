"""fs: one file per object under `base_path`, written through a staging directory, on a bounded thread pool.

Layout: `base_path/<d[:2]>/<d>.kv`, `d` = blake3 of the object name (object_format.key_name), so names
of any length fit a file name; the full key is in each file's header. A write goes to
`base_path/<relative_tmp_dir or .tmp>/`, is fsynced, then renamed into place: readers see a whole object
or none. The parent directory is not fsynced per object (a crash may lose the newest renames, never expose
a partial file).

Start-up (the constructor) removes leftover temp files (with `shared`, only those older than an hour,
since another server may be writing) and rebuilds the in-memory index from the file headers, dropping
files whose header or size is wrong. A key missing from the index is looked for on disk (one stat per
key; a miss is remembered for `NEGATIVE_TTL_S`, at most `NEGATIVE_MAX` keys), since other servers (a
directory shared over NFS) or a person may add objects after start-up; with `shared`, listings also sync
the index with the directory. `persist_enabled=False` deletes the indexed objects on close.
`read_ahead_size` is a `posix_fadvise(WILLNEED)` over the file's first bytes before reading.

A load that finds a damaged file (bad header, wrong key, truncation, checksum mismatch) quarantines it: the
file moves to `base_path/.quarantine/` (kept for a person to inspect, at most 100 files), the key leaves
the index and `/l2/keys`, and it is counted and logged once; later lookups miss without touching it.
Files are 0600 and directories 0700: they hold tenants' KV.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from lmcache.adapters.storage import _fs_io
from lmcache.adapters.storage._adapter_mixins import PinnedReads, SizedLoads
from lmcache.adapters.storage._adapter_state import (
    AdapterCounters,
    InFlight,
    LockTable,
    page_of,
    tracked,
    usage_by_salt,
)
from lmcache.adapters.storage._blocking import run_jobs
from lmcache.adapters.storage.object_format import (
    BufferMismatchError,
    CorruptObjectError,
    encode_header,
    key_name,
    parse_key_name,
)
from lmcache.domain.units import gb_to_bytes
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("FsL2Adapter",)

logger = logging.getLogger(__name__)
IO_THREADS = 8
_STALE_TMP_SECONDS = 3600.0
NEGATIVE_TTL_S = 1.0  # a key found absent on disk is not looked for again within this
NEGATIVE_MAX = 65536
QUARANTINE_DIR = ".quarantine"


def _digest(name: str) -> str:
    return blake3.blake3(name.encode()).hexdigest()[:40]


class _Quarantined(Exception):
    """A load found a damaged file and moved it aside (`where`: its new path, or None if it was gone)."""

    def __init__(self, error: CorruptObjectError, where: str | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.where = where


class FsL2Adapter(PinnedReads, SizedLoads):
    """File-system L2 tier; see the module docstring for layout and recovery."""

    def __init__(
        self,
        base_path: str,
        relative_tmp_dir: str | None = None,
        read_ahead_size: int | None = None,
        use_odirect: bool = False,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.base = Path(base_path)
        self.tmp = self.base / (relative_tmp_dir or ".tmp")
        self.read_ahead = read_ahead_size
        self.odirect = use_odirect
        self.capacity_bytes = gb_to_bytes(max_capacity_gb)
        self.shared = shared
        self.persist = persist_enabled
        self.counters = AdapterCounters()
        self._index: dict[ObjectKey, int] = {}  # key -> file size
        self._names: list[str] | None = None  # sorted object names, rebuilt after a change
        self._reserved = 0
        self._used = 0
        self._locks = LockTable()
        self._inflight = InFlight()
        self._absent: dict[ObjectKey, float] = {}  # key -> monotonic time until which a disk miss holds
        self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="lmcache-fs-l2")
        _fs_io.make_dir(self.base)
        _fs_io.make_dir(self.tmp)
        self._clean_tmp()
        self._rebuild_index()

    # -- start-up -------------------------------------------------------------------------------------
    def _clean_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in os.scandir(self.tmp):
            if entry.is_file() and (not self.shared or entry.stat().st_mtime < cutoff):
                Path(entry.path).unlink(missing_ok=True)

    def _rebuild_index(self) -> None:
        for path, digest in _fs_io.object_files(str(self.base)):
            self._index_file(path, digest)
        logger.info("fs L2 %s: %d objects indexed", self.base, len(self._index))

    def _index_file(self, path: str, digest: str) -> None:
        try:
            header, size = _fs_io.read_header(path)
            name = header.key_name.decode()
            if size != header.total_size or _digest(name) != digest:
                raise CorruptObjectError("size or name mismatch")
            self._set(parse_key_name(name), size)
        except (CorruptObjectError, ValueError, OSError) as exc:
            self.counters.corrupt += 1
            logger.warning("fs L2: dropping unreadable object file %s: %s", path, exc)
            Path(path).unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------------------------------------
    def _path(self, key: ObjectKey) -> str:
        digest = _digest(key_name(key))
        return str(self.base / digest[:2] / f"{digest}.kv")

    def _set(self, key: ObjectKey, size: int | None) -> None:
        self._used -= self._index.pop(key, 0)
        if size is not None:
            self._index[key] = size
            self._used += size
        self._names = None

    # -- port ------------------------------------------------------------------------------------------
    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Write new objects atomically; keys already indexed count as stored."""
        cancelled = threading.Event()
        todo = [(k, b) for k, b in zip(keys, buffers, strict=True) if k not in self._index]
        sizes = {k: self._admit(k, b.nbytes) for k, b in todo}
        jobs = [self._store_job(k, b, cancelled) for k, b in todo if sizes[k]]
        written = [k for k, _ in todo if sizes[k]]

        def settle(results: list[Any]) -> None:
            self._reserved -= sum(sizes.values())
            for key, outcome in zip(written, results, strict=True):
                if isinstance(outcome, int) and not isinstance(outcome, bool):
                    self._set(key, outcome)
                    self._absent.pop(key, None)
                    self.counters.stores += 1
                else:
                    self._store_failed(key, outcome)

        await run_jobs(self._pool, jobs, cancelled, settle)
        return [key in self._index for key in keys]

    def _admit(self, key: ObjectKey, nbytes: int) -> int:
        size = _fs_io.ALIGN + nbytes  # upper bound of header + payload, exact after the write
        if self.capacity_bytes and self._used + self._reserved + size > self.capacity_bytes:
            self.counters.capacity_rejections += 1
            self.counters.store_failures += 1
            return 0
        self._reserved += size
        return size

    def _store_job(
        self, key: ObjectKey, buf: memoryview, cancelled: threading.Event
    ) -> Callable[[], int | bool]:
        final = self._path(key)
        tmp = str(self.tmp / f"{Path(final).stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp")

        def job() -> int | bool:
            if cancelled.is_set():
                return False
            return self._write_file(key, buf, tmp, final, cancelled)

        return job

    def _write_file(
        self, key: ObjectKey, buf: memoryview, tmp: str, final: str, cancelled: threading.Event
    ) -> int | bool:
        """Write the object to `tmp`, fsync, rename to `final` (on a pool thread); its size, or False."""
        header = encode_header(key, buf, align=_fs_io.ALIGN if self.odirect else 64)
        ok = _fs_io.write_object(tmp, final, header, buf, self.odirect, cancelled)
        return len(header) + buf.nbytes if ok else False

    def _store_failed(self, key: ObjectKey, outcome: Any) -> None:
        self.counters.store_failures += 1
        if isinstance(outcome, BaseException):
            self.counters.backend_errors += 1
            logger.warning("fs L2: store of %s failed: %r", key.short(), outcome)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Answer from the index, then from the disk for keys it lacks (negative answers cached); pin hits."""
        present = [key in self._index for key in keys]
        if not all(present):
            now = time.monotonic()
            missing = [
                k for k, ok in zip(keys, present, strict=True) if not ok and self._absent.get(k, 0.0) <= now
            ]
            if missing:
                paths = [self._path(k) for k in missing]
                sizes = await asyncio.get_running_loop().run_in_executor(self._pool, _fs_io.sizes_of, paths)
                self._remember_absent(
                    [k for k, size in zip(missing, sizes, strict=True) if size is None], now
                )
                for key, size in zip(missing, sizes, strict=True):
                    if size is not None and key not in self._index:
                        self._set(key, size)
                present = [key in self._index for key in keys]
        return self._locks.lock(keys, present)

    def _remember_absent(self, keys: list[ObjectKey], now: float) -> None:
        if len(self._absent) + len(keys) > NEGATIVE_MAX:
            self._absent = {k: t for k, t in self._absent.items() if t > now}
            if len(self._absent) + len(keys) > NEGATIVE_MAX:
                self._absent.clear()
        until = now + NEGATIVE_TTL_S
        for key in keys:
            self._absent[key] = until

    @tracked(None)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[int | None]:
        """Read and verify objects into the buffers; a failed check is a miss, counted in `corrupt`."""
        cancelled = threading.Event()
        wanted = [(k, b) for k, b in zip(keys, buffers, strict=True) if k in self._index]
        jobs = [self._load_job(k, b, cancelled, exact) for k, b in wanted]
        answers = await run_jobs(self._pool, jobs, cancelled)
        results = dict(zip([k for k, _ in wanted], answers, strict=True))
        out: list[int | None] = []
        for key in keys:
            outcome = results.get(key, False)
            self.counters.loads += 1
            ok = isinstance(outcome, int) and not isinstance(outcome, bool)
            if not ok:
                self._load_failed(key, outcome)
            out.append(outcome if ok else None)
        return out

    def _load_job(
        self, key: ObjectKey, buf: memoryview, cancelled: threading.Event, exact: bool
    ) -> Callable[[], int | bool]:
        path = self._path(key)

        def job() -> int | bool:
            if cancelled.is_set():
                return False
            try:
                return _fs_io.read_object(path, key, buf, self.odirect, self.read_ahead, exact)
            except BufferMismatchError:
                raise  # a sound object of another layout: a miss, not damage
            except CorruptObjectError as exc:
                raise _Quarantined(
                    exc, _fs_io.quarantine(path, exc.file_id, self.base / QUARANTINE_DIR)
                ) from exc

        return job

    def _load_failed(self, key: ObjectKey, outcome: Any) -> None:
        self.counters.load_misses += 1
        if isinstance(outcome, FileNotFoundError):
            self._set(key, None)  # deleted behind our back (another server, a person)
        elif isinstance(outcome, _Quarantined):
            self._set(key, None)
            self.counters.corrupt += 1
            if outcome.where is not None:
                self.counters.quarantined += 1
            logger.warning(
                "fs L2: corrupt object %s (%s) quarantined: %s",
                key.short(),
                outcome.error,
                outcome.where or "already gone or rewritten",
            )
        elif isinstance(outcome, CorruptObjectError):
            self.counters.corrupt += 1
            logger.warning("fs L2: corrupt object %s: %s", key.short(), outcome)
        elif isinstance(outcome, BaseException):
            self.counters.backend_errors += 1
            logger.warning("fs L2: load of %s failed: %r", key.short(), outcome)

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Unlink object files at once (pins do not defer deletion)."""
        paths = [self._path(k) for k in keys]
        removed = await asyncio.get_running_loop().run_in_executor(self._pool, _fs_io.unlink_all, paths)
        for key in keys:
            self._set(key, None)
        return removed

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Indexed keys ordered by object name; the cursor is the last name of the previous page.

        With `shared`, the first page first syncs the index with the directory (other servers' objects
        added, vanished ones dropped), so a coordinator resyncing from one server sees the whole tier.
        """
        if self.shared and cursor is None:
            known = {_digest(key_name(k)): k for k in self._index}
            found, gone = await asyncio.get_running_loop().run_in_executor(
                self._pool, _scan_directory, str(self.base), known.keys()
            )
            for digest in gone:
                self._set(known[digest], None)
            for key, size in found:
                self._set(key, size)
        if self._names is None:
            self._names = sorted(key_name(k) for k in self._index)
        names, nxt = page_of(self._names, cursor, limit)
        return KeyPage(tuple(parse_key_name(n) for n in names), nxt)

    async def usage(self) -> L2Usage:
        """Bytes of the indexed object files (headers included) and the configured capacity."""
        used, count, by_salt = usage_by_salt(self._index.items())
        return L2Usage(used, count, self.capacity_bytes, by_salt)

    async def close(self) -> None:
        """Finish writes in flight, drop the objects unless `persist_enabled`, stop the pool."""
        await self._inflight.drain()
        if not self.persist and self._index:
            await self.delete(list(self._index))
        self._pool.shutdown(wait=True)


def _scan_directory(base: str, known: Iterable[str]) -> tuple[list[tuple[ObjectKey, int]], list[str]]:
    """Objects on disk that `known` (file digests) lacks, read from their headers; known digests gone."""
    unseen = set(known)
    found: list[tuple[ObjectKey, int]] = []
    for path, digest in _fs_io.object_files(base):
        if digest in unseen:
            unseen.discard(digest)
            continue
        try:
            header, size = _fs_io.read_header(path)
            name = header.key_name.decode()
            if size == header.total_size and _digest(name) == digest:
                found.append((parse_key_name(name), size))
        except (CorruptObjectError, ValueError, OSError):
            continue  # being replaced or damaged: its own load reports it
    return found, sorted(unseen)
