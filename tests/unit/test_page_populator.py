"""PagePopulator: backs pages ahead of use (checked with mincore), stops on request, never raises."""

from __future__ import annotations

import ctypes
import mmap
import time

import numpy as np
import pytest

from lmcache.adapters.memory.populate import PAGE, PagePopulator, mapping_address

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)


def resident_pages(address: int, length: int) -> int:
    """How many pages of `[address, address + length)` are resident (mincore(2))."""
    pages = -(-length // PAGE)
    vec = ctypes.create_string_buffer(pages)
    assert _libc.mincore(address, length, vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec.raw)


@pytest.fixture
def mapping() -> mmap.mmap:
    return mmap.mmap(-1, 64 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def test_walk_backs_every_page(mapping: mmap.mmap) -> None:
    base = mapping_address(mapping)
    assert resident_pages(base, len(mapping)) == 0
    populator = PagePopulator(base, len(mapping), "test", step=8 * PAGE)
    populator.start()
    deadline = time.monotonic() + 10
    while not populator.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert populator.done and populator.populated_bytes == len(mapping)
    assert resident_pages(base, len(mapping)) == 64
    populator.stop()


def test_ensure_backs_only_the_range_asked_for(mapping: mmap.mmap) -> None:
    base = mapping_address(mapping)
    populator = PagePopulator(base, len(mapping), "test")
    populator.ensure(10 * PAGE + 100, 3 * PAGE)  # an unaligned start backs from its page
    assert resident_pages(base, len(mapping)) == 4
    assert resident_pages(base + 10 * PAGE, 4 * PAGE) == 4
    assert populator.populated_bytes == 0  # the walk's frontier did not move


def test_stop_ends_the_walk_before_the_mapping_goes(mapping: mmap.mmap) -> None:
    size = len(mapping)
    populator = PagePopulator(mapping_address(mapping), size, "test", step=PAGE)
    populator.start()
    populator.stop()
    frontier = populator.populated_bytes
    assert 0 <= frontier <= size
    mapping.close()  # nothing touches it any more
    populator.start()  # a stopped populator does not walk again (it would fault on the unmapped range)
    time.sleep(0.05)
    assert populator.populated_bytes == frontier


def test_a_range_that_cannot_be_backed_is_given_up_quietly() -> None:
    readonly = mmap.mmap(-1, 8 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    address = int(np.frombuffer(readonly, dtype=np.uint8).ctypes.data)  # ctypes wants a writable buffer
    populator = PagePopulator(address, 8 * PAGE, "test")
    populator.ensure(0, PAGE)  # EFAULT on a read-only mapping: logged once, never raised
    assert not populator.supported
    populator.run_now()
    assert populator.done and populator.populated_bytes == 0
