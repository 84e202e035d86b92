"""One L1Memory contract, every medium: the fake, anonymous memory, a named SHM pool, a DAX-style file.

GdsL1Memory joins the list where the cuFile stack and a CUDA device are present; elsewhere its clear
start-up error is asserted instead. Media-specific behaviour (SHM names and unlinking, file persistence,
pinning) stays in test_l1_memory_adapters.py.
"""

from __future__ import annotations

import ctypes
import random
import threading
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters.memory._mapped import L1MemoryError
from lmcache.adapters.memory.anonymous import AnonymousL1Memory
from lmcache.adapters.memory.devdax import DevdaxL1Memory
from lmcache.adapters.memory.gds import GdsL1Memory, cufile_problem
from lmcache.adapters.memory.shm import ShmL1Memory
from tests.fakes.l1_memory import FakeL1Memory

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from lmcache.ports.l1_memory import L1Memory

SIZE = 3 * 4096 + 123  # not a page multiple: the arena is exactly what was asked for
MEDIA = ["fake", "anonymous", "shm", "devdax"] + (["gds"] if cufile_problem() is None else [])


def _open(name: str, tmp_path: Path) -> L1Memory:
    if name == "fake":
        return FakeL1Memory(SIZE)
    if name == "anonymous":
        return AnonymousL1Memory(SIZE, pin=False)
    if name == "shm":
        return ShmL1Memory(SIZE)  # an automatic name: no clash with other test runs
    if name == "devdax":
        return DevdaxL1Memory(tmp_path / "dax.bin", SIZE)
    if name == "gds":
        return GdsL1Memory(tmp_path, SIZE)
    raise AssertionError(name)


@pytest.fixture(params=MEDIA)
def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[L1Memory]:
    mem = _open(request.param, tmp_path)
    yield mem
    mem.close()


def _pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_the_arena_is_exactly_size_bytes(memory: L1Memory) -> None:
    assert memory.size_bytes == SIZE
    assert memory.view(0, SIZE).nbytes == SIZE
    assert memory.view(SIZE, 0).nbytes == 0  # an empty extent at the end is inside
    assert memory.view(SIZE - 1, 1).nbytes == 1


def test_views_are_writable_contiguous_bytes(memory: L1Memory) -> None:
    view = memory.view(17, 301)
    assert (view.format, view.itemsize, view.ndim, view.nbytes) == ("B", 1, 1, 301)
    assert not view.readonly and view.c_contiguous
    view[:] = _pattern(1, 301)
    assert bytes(view) == _pattern(1, 301)


def test_views_alias_each_other_and_the_tensor(memory: L1Memory) -> None:
    memory.view(100, 16)[:] = b"0123456789abcdef"
    assert bytes(memory.view(96, 24)) == bytes(4) + b"0123456789abcdef" + bytes(4)
    tensor = memory.tensor
    assert bytes(tensor[100:116].numpy()) == b"0123456789abcdef"
    tensor[4000:4008] = 7
    assert bytes(memory.view(4000, 8)) == b"\x07" * 8
    memory.view(SIZE - 3, 3)[:] = b"end"
    assert bytes(tensor[-3:].numpy()) == b"end"


def test_tensor_is_the_whole_arena_as_one_uint8_cpu_tensor(memory: L1Memory) -> None:
    tensor = memory.tensor
    assert tensor.dtype == torch.uint8 and tensor.dim() == 1 and tensor.numel() == SIZE
    assert tensor.device.type == "cpu" and tensor.is_contiguous()
    assert memory.tensor.data_ptr() == tensor.data_ptr()  # the same memory every time, never a copy


@pytest.mark.parametrize(
    ("offset", "size"), [(-1, 1), (0, -1), (SIZE - 4, 8), (SIZE + 1, 0), (0, SIZE + 1), (SIZE, 1)]
)
def test_an_extent_outside_the_arena_is_a_value_error(memory: L1Memory, offset: int, size: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        memory.view(offset, size)


def test_disjoint_extents_keep_their_own_bytes(memory: L1Memory) -> None:
    extents = [(0, 1000), (1000, 24), (1024, 4096), (8000, SIZE - 8000)]
    for seed, (offset, size) in enumerate(extents):
        memory.view(offset, size)[:] = _pattern(seed, size)
    for seed, (offset, size) in enumerate(extents):
        assert bytes(memory.view(offset, size)) == _pattern(seed, size), (offset, size)


def test_views_from_several_threads(memory: L1Memory) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for round_ in range(20):
                memory.view(n * 3000, 3000)[:] = _pattern(n * 100 + round_, 3000)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for n in range(4):
        assert bytes(memory.view(n * 3000, 3000)) == _pattern(n * 100 + 19, 3000)


def test_address_is_the_tensors_first_byte(memory: L1Memory) -> None:
    address = memory.address  # known before the tensor exists: start-up registers it without torch
    assert memory.tensor.data_ptr() == address
    memory.view(5, 3)[:] = b"abc"
    assert ctypes.string_at(address + 5, 3) == b"abc"


def test_close_is_idempotent_and_the_arena_refuses_use_after_it(memory: L1Memory) -> None:
    memory.view(0, 4)[:] = b"gone"
    memory.close()
    memory.close()
    with pytest.raises(RuntimeError):
        memory.view(0, 4)
    with pytest.raises(RuntimeError):
        _ = memory.tensor


def test_gds_runs_the_contract_or_refuses_with_a_clear_error(tmp_path: Path) -> None:
    problem = cufile_problem()
    if problem is None:  # the cuFile stack is here: GDS is one of the media above
        assert "gds" in MEDIA
        return
    with pytest.raises(L1MemoryError, match=r"--gds-l1-path .*GDS L1 cannot start: ") as info:
        GdsL1Memory(tmp_path, SIZE)
    assert problem in str(info.value)
    assert not (tmp_path / "lmcache_gds_slab.bin").exists()  # nothing was created on the way out
