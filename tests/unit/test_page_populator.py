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


def _wait_done(populator: PagePopulator, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not populator.done and time.monotonic() < deadline:
        time.sleep(0.005)


def test_the_walk_takes_no_step_while_a_copy_holds_it(mapping: mmap.mmap) -> None:
    populator = PagePopulator(mapping_address(mapping), len(mapping), "test", step=PAGE, max_wait_s=30.0)
    with populator.hold():
        populator.start()
        time.sleep(0.2)
        assert populator.populated_bytes <= PAGE  # at most the step that raced the hold
    _wait_done(populator)
    assert populator.done and populator.populated_bytes == len(mapping)
    populator.stop()


def test_a_held_walk_still_advances_after_max_wait(mapping: mmap.mmap) -> None:
    populator = PagePopulator(mapping_address(mapping), len(mapping), "test", step=8 * PAGE, max_wait_s=0.01)
    with populator.hold():  # a request stream that never pauses must not stop the walk for good
        populator.start()
        _wait_done(populator)
        assert populator.done
    populator.stop()


def test_stop_wakes_a_walk_that_waits_for_holders(mapping: mmap.mmap) -> None:
    populator = PagePopulator(mapping_address(mapping), len(mapping), "test", step=PAGE, max_wait_s=60.0)
    with populator.hold():
        populator.start()
        time.sleep(0.05)
        started = time.monotonic()
        populator.stop()
        assert time.monotonic() - started < 5.0
    assert not populator.done


def test_hold_is_free_once_the_walk_is_done(mapping: mmap.mmap) -> None:
    populator = PagePopulator(mapping_address(mapping), len(mapping), "test")
    populator.run_now()
    assert populator.hold() is not populator  # a shared no-op context


def test_covers_what_the_walk_passed(mapping: mmap.mmap) -> None:
    populator = PagePopulator(mapping_address(mapping), len(mapping), "test", step=8 * PAGE)
    assert not populator.covers(0, PAGE)
    populator.run_now()
    assert populator.covers(0, len(mapping)) and populator.covers(5 * PAGE, PAGE)
