"""Backing memory ahead of use: `madvise(MADV_POPULATE_WRITE)` in steps, on a low-priority thread.

A lazily backed mapping costs one page fault per 4 KiB page on first write (65,536 faults and page
clears for one 256 MiB store), and that cost lands on whichever request touches the page first. The
populator walks a mapping from its start in `step` slices after the server is ready, so readiness is not
delayed and the allocator's frontier (extents are handed out from low offsets up) finds its pages already
backed. A request that outruns the walk backs its own range with one call (`ensure`), which is still far
cheaper than faulting page by page.

The syscall goes through ctypes, which releases the GIL, so the walk never stalls the socket thread; the
thread runs at nice +10 so it yields the cores to requests. Clearing pages also takes memory bandwidth
and the mmap lock, which a copy running beside it would share, so the walk also stands aside while a
request copies (`hold`): it waits between steps until no copy holds it, for at most `max_wait_s` so that
it still advances under a continuous stream of requests. On kernels without MADV_POPULATE_WRITE
(before 5.14) population is skipped with one log line and pages are backed on first touch as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import mmap

__all__ = ("MADV_POPULATE_WRITE", "PagePopulator", "madvise", "mapping_address")

logger = logging.getLogger(__name__)

MADV_POPULATE_WRITE: Final = 23
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_STEP: Final = 2 << 20  # per call: populate holds the mmap lock, which munmap and faults wait on
_MAX_WAIT_S: Final = 0.05  # longest a step waits for copies to finish

_libc = ctypes.CDLL(None, use_errno=True)
_madvise = _libc.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_madvise.restype = ctypes.c_int


def madvise(address: int, length: int, advice: int) -> int:
    """`madvise(2)` on `[address, address + length)` (page-aligned start); 0 or the errno."""
    if length <= 0:
        return 0
    if _madvise(address, length, advice) == 0:
        return 0
    return ctypes.get_errno()


def mapping_address(buffer: mmap.mmap) -> int:
    """The start address of a writable mmap (ctypes points at its exported buffer for a moment)."""
    holder = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(holder)
    finally:
        del holder


class PagePopulator:
    """Backs `[0, size)` of a mapping at `address`, front to back, on a background thread.

    Args:
        address: Start of the mapping (page-aligned).
        size: Bytes to back.
        name: For the thread name and log lines.
        step: Bytes per syscall; between steps the walk checks for `stop` and waits for `hold`ers.
        max_wait_s: Longest one step waits for holders to let go.
    """

    def __init__(
        self, address: int, size: int, name: str, step: int = _STEP, max_wait_s: float = _MAX_WAIT_S
    ) -> None:
        if address % PAGE:
            raise ValueError(f"{name}: mapping address {address:#x} is not page-aligned")
        self._address = address
        self._size = size
        self._name = name
        self._step = max(PAGE, step - step % PAGE)
        self._frontier = 0  # [0, frontier) is backed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holds = 0
        self._idle = threading.Condition(threading.Lock())
        self._max_wait_s = max_wait_s
        self.supported = True

    @property
    def populated_bytes(self) -> int:
        """Bytes from the start of the mapping known to be backed."""
        return self._frontier

    @property
    def done(self) -> bool:
        """True once the whole mapping is backed (or population is unsupported and was given up)."""
        return self._frontier >= self._size or not self.supported

    def start(self) -> None:
        """Start the background walk; idempotent."""
        if self._thread is not None or self.done:
            return
        self._thread = threading.Thread(target=self._run, name=f"populate-{self._name}", daemon=True)
        self._thread.start()

    def run_now(self) -> None:
        """Walk the whole mapping on the calling thread (tests, or media that must be backed up front)."""
        self._run(renice=False)

    def covers(self, offset: int, size: int) -> bool:
        """Whether `[offset, offset + size)` needs no backing (the walk passed it, or population is off)."""
        return offset + size <= self._frontier or not self.supported

    def ensure(self, offset: int, size: int) -> None:
        """Back `[offset, offset + size)` now unless the walk already did; never raises."""
        if self.covers(offset, size):
            return
        start = offset - offset % PAGE
        end = min(self._size, offset + size)
        if end > start:
            self._advise(start, end - start)

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """A context during which the walk takes no step (a request's copy); a no-op once the walk is done."""
        return _NO_HOLD if self.done else self

    def __enter__(self) -> None:
        with self._idle:
            self._holds += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._holds -= 1
            if not self._holds:
                self._idle.notify_all()

    def stop(self) -> None:
        """Stop the walk and wait for its current step; the mapping may be unmapped afterwards."""
        self._stop.set()
        with self._idle:
            self._idle.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self, renice: bool = True) -> None:
        if renice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except OSError:
                logger.debug("%s: could not lower the populate thread's priority", self._name)
        while self._frontier < self._size and not self._stop.is_set():
            self._wait_for_holders()
            length = min(self._step, self._size - self._frontier)
            if not self._advise(self._frontier, length):
                return
            self._frontier += length
        if self._frontier >= self._size:
            logger.debug("%s: %d bytes backed", self._name, self._size)

    def _wait_for_holders(self) -> None:
        with self._idle:
            if self._holds and not self._stop.is_set():
                self._idle.wait(self._max_wait_s)

    def _advise(self, offset: int, length: int) -> bool:
        err = errno.EINTR
        while err == errno.EINTR:
            err = madvise(self._address + offset, length, MADV_POPULATE_WRITE)
        if err == 0:
            return True
        if self.supported:
            self.supported = False
            log = logger.info if err == errno.EINVAL else logger.warning
            log(
                "%s: pages are backed on first touch (madvise populate failed: %s)",
                self._name,
                os.strerror(err),
            )
        return False


_NO_HOLD: Final = contextlib.nullcontext()
