"""Moving vLLM's CPU KV storage into SHM in place, and the names vLLM imports from `lmcache`."""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING

import torch

from lmcache.adapters.vllm.kv_tensors import migrate_to_shm, physical, remove_stale_segments

if TYPE_CHECKING:
    from pathlib import Path


def test_every_view_of_a_migrated_storage_lives_in_the_segment(tmp_path: Path) -> None:
    raw = torch.arange(4 * 2 * 8 * 6, dtype=torch.float16)
    handed = [raw[:192].view(4, 2, 8, 3), raw[192:].view(4, 2, 8, 3)]
    held_elsewhere = raw[192:].view(4, 2, 24)  # like the kernel-block views bound to attention layers
    descriptors, storages = migrate_to_shm(handed, str(tmp_path))
    assert len(storages) == 1 and len({d.shm_name for d in descriptors}) == 1
    second = descriptors[1]
    assert second.metadata.shape == [4, 2, 8, 3] and second.metadata.storage_offset == 192
    assert second.nbytes == raw.numel() * 2
    path = tmp_path / second.shm_name.lstrip("/")
    assert path.stat().st_mode & 0o777 == 0o600
    fd = os.open(path, os.O_RDWR)
    try:
        other = mmap.mmap(fd, second.nbytes)
    finally:
        os.close(fd)
    peer = torch.frombuffer(other, dtype=torch.float16)
    assert torch.equal(peer, torch.arange(raw.numel(), dtype=torch.float16))  # the old bytes moved over
    held_elsewhere[0, 0, 0] = -1.0  # a write through a view nobody handed to the connector
    assert peer[192].item() == -1.0
    peer[0] = -2.0  # a write from "the server" side
    assert handed[0][0, 0, 0, 0].item() == -2.0
    storages[0].unlink()
    assert not path.exists()
    del peer
    other.close()


def test_segments_of_exited_workers_are_removed_before_a_migration(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"lmcache_kv_{dead_pid}_0"
    mine = tmp_path / f"lmcache_kv_{os.getpid()}_7"
    other = tmp_path / "lmcache_kv_notapid_0"
    for path in (stale, mine, other):
        path.write_bytes(b"x")
    migrate_to_shm([torch.zeros(4, dtype=torch.float16)], str(tmp_path))
    assert not stale.exists() and mine.exists() and other.exists()
    assert remove_stale_segments(str(tmp_path)) == []


def test_physical_orders_dims_by_decreasing_stride() -> None:
    base = torch.zeros(4, 3, 2, 5)
    hnd_as_nhd = base.permute(0, 2, 1, 3)
    assert physical(hnd_as_nhd).shape == (4, 3, 2, 5)
    assert physical(base).stride() == base.stride()


def test_the_modules_vllm_imports_expose_the_names_it_uses() -> None:
    from lmcache.integration.vllm.utils import mla_enabled
    from lmcache.integration.vllm.vllm_multi_process_adapter import (
        LMCacheMPSchedulerAdapter,
        LMCacheMPWorkerAdapter,
        LoadStoreOp,
        ParallelStrategy,
    )
    from lmcache.utils import init_logger
    from lmcache.v1.multiprocess.custom_types import BlockAllocationRecord

    assert mla_enabled(type("ModelConfig", (), {"use_mla": True})()) is True
    assert mla_enabled(object()) is False
    assert init_logger("x").name == "lmcache.x"
    record = BlockAllocationRecord(req_id="r", new_block_ids=[1], new_token_ids=[2])
    assert record.new_block_ids == [1]
    op = LoadStoreOp(token_ids=[1, 2], block_ids=[3], start=0, end=2, skip_first_n_tokens=0)
    assert len(op) == 1
    assert ParallelStrategy(False, 1, 0, 1, 0, 1, 1).num_kv_readers == 1
    assert callable(LMCacheMPSchedulerAdapter.check_lookup_result)
    assert callable(LMCacheMPWorkerAdapter.batched_submit_store_requests)
