from __future__ import annotations

from multiprocessing import shared_memory
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters.memory._mapped import L1MemoryError
from lmcache.adapters.memory.anonymous import AnonymousL1Memory
from lmcache.adapters.memory.devdax import DevdaxL1Memory
from lmcache.adapters.memory.gds import GdsL1Memory, cufile_problem
from lmcache.adapters.memory.shm import SHM_PREFIX, ShmL1Memory, shm_pool_name
from lmcache.app.container import ServerContainer
from lmcache.app.l1_medium import l1_medium
from tests.unit.config_helpers import server

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.ports.l1_memory import L1Memory

SIZE = 1 << 16


def _conforms(memory: L1Memory) -> L1Memory:
    return memory


def test_anonymous_views_alias_the_arena_tensor() -> None:
    mem = AnonymousL1Memory(SIZE, pin=False)
    try:
        _conforms(mem)
        view = mem.view(4096, 8)
        view[:] = b"abcdefgh"
        assert bytes(mem.tensor[4096:4104].tolist()) == b"abcdefgh"
        mem.tensor_view(8192, 4).fill_(7)
        assert bytes(mem.view(8192, 4)) == b"\x07" * 4
        assert mem.tensor.dtype == torch.uint8 and mem.tensor.numel() == SIZE
        with pytest.raises(ValueError, match="outside"):
            mem.view(SIZE - 4, 8)
        del view
    finally:
        mem.close()
    mem.close()  # idempotent
    with pytest.raises(L1MemoryError, match="closed"):
        mem.view(0, 1)


def test_close_with_live_views_does_not_crash() -> None:
    mem = AnonymousL1Memory(SIZE, pin=False)
    held = mem.view(0, 16)
    mem.close()
    assert len(held) == 16


def test_file_mmap_is_backed_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dax.bin"
    mem = DevdaxL1Memory(path, SIZE)
    mem.view(100, 5)[:] = b"hello"
    mem.close()
    data = path.read_bytes()
    assert len(data) == SIZE and data[100:105] == b"hello"
    again = DevdaxL1Memory(path, SIZE)  # reopening maps the same bytes
    try:
        assert bytes(again.view(100, 5)) == b"hello"
    finally:
        again.close()


def test_devdax_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(L1MemoryError, match="--l1-devdax-path"):
        DevdaxL1Memory(tmp_path / "missing" / "dax", SIZE)


def test_named_shm_segment_is_shared_and_unlinked_on_close() -> None:
    mem = ShmL1Memory(SIZE, "unit_test_pool")
    assert mem.name == "lmcache_l1_pool_unit_test_pool"
    mem.view(10, 3)[:] = b"kv!"
    worker = shared_memory.SharedMemory(name=mem.name)  # what the engine-driven worker does
    try:
        assert worker.buf is not None and bytes(worker.buf[10:13]) == b"kv!"
    finally:
        worker.close()
    mem.close()
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=mem.name)


def test_stale_segment_is_replaced() -> None:
    stale = shared_memory.SharedMemory(name=SHM_PREFIX + "stale_test", create=True, size=4096)
    assert stale.buf is not None
    stale.buf[0] = 42
    stale.close()
    mem = ShmL1Memory(SIZE, SHM_PREFIX + "stale_test")  # prefix not doubled
    try:
        assert mem.name == SHM_PREFIX + "stale_test"
        assert mem.size_bytes == SIZE and bytes(mem.view(0, 1)) == b"\x00"
    finally:
        mem.close()


def test_shm_names() -> None:
    auto = shm_pool_name(None)
    assert auto.startswith(SHM_PREFIX) and auto != shm_pool_name(None)
    with pytest.raises(L1MemoryError, match="no SHM pool"):
        shm_pool_name("")


def test_the_medium_follows_the_flags(tmp_path: Path) -> None:
    assert l1_medium(SIZE) == "anonymous"
    assert l1_medium(SIZE, want_shm_pool=True, shm_name="factory_test") == "shm"
    assert l1_medium(SIZE, want_shm_pool=True, shm_name="") == "anonymous"
    assert l1_medium(SIZE, want_shm_pool=True, shm_name="x", shm_dir=str(tmp_path / "nope")) == "anonymous"
    assert l1_medium(SIZE, devdax_path=tmp_path / "d.bin", want_shm_pool=True) == "devdax"
    assert l1_medium(SIZE, gds_path=tmp_path, devdax_path=tmp_path / "d.bin") == "gds"


def test_the_container_builds_the_chosen_medium(tmp_path: Path) -> None:
    cases = {
        ("--supported-transfer-mode", "lmcache_driven"): "AnonymousL1Memory",
        ("--shm-name", "factory_test"): "ShmL1Memory",
        ("--shm-name", ""): "AnonymousL1Memory",
        ("--l1-devdax-path", str(tmp_path / "d.bin"), "--shm-name", "", "--no-l1-use-lazy"): "DevdaxL1Memory",
    }
    for argv, cls in cases.items():
        container = ServerContainer(config=server(["--l1-size-gb", "0.001", *argv]))
        memory = container.l1_memory()
        try:
            assert type(memory).__name__ == cls
            assert container.l1_memory() is memory  # one medium, however often it is asked for
        finally:
            memory.close()


@pytest.mark.skipif(cufile_problem() is None, reason="cuFile stack present: the error path cannot run")
def test_gds_without_cufile_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(L1MemoryError, match=r"--gds-l1-path .*GDS L1 cannot start"):
        GdsL1Memory(tmp_path, SIZE)
    container = ServerContainer(config=server(["--gds-l1-path", str(tmp_path)]))
    with pytest.raises(L1MemoryError, match="--gds-l1-path"):
        container.l1_memory()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinning_in_lazy_steps() -> None:
    mem = AnonymousL1Memory(4 * SIZE, use_lazy=True, init_size_bytes=SIZE)
    try:
        assert mem.pinned_bytes == SIZE
        mem.ensure_pinned(2 * SIZE + 1)
        assert mem.pinned_bytes == 3 * SIZE
        assert mem.tensor.is_pinned()
    finally:
        mem.close()
