"""raw_block and dax specifics: the on-device index across restarts and crashes, refusals, a loop device."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.app.config import ConfigError
from tests.integration.l2.conftest import build
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    from collections.abc import Iterator


def _raw(path: Path, **extra: Any) -> Any:
    spec = {
        "type": "raw_block",
        "device_path": str(path),
        "slot_bytes": 64 << 10,
        "capacity_bytes": (1 << 20) + 16 * (64 << 10),
        "meta_total_bytes": 1 << 20,
        **extra,
    }
    return build(spec)


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lmcache-dax-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_raw_block_checkpoint_survives_restart_and_a_crash_loses_only_the_newest(
    tmp_path: Path,
) -> None:
    device = tmp_path / "dev.img"
    first = _raw(device)
    data = [payload(i, 20_000 + i) for i in range(3)]
    assert await first.store([key(0), key(1)], data[:2]) == [True, True]
    await first.close()  # checkpoints
    second = _raw(device)
    assert await second.lookup_and_lock([key(0), key(1)]) == [True, True]
    assert await second.store([key(2)], [data[2]]) == [True]
    await asyncio.sleep(0)
    second._pool.shutdown(wait=True)  # a crash: no close, no checkpoint of key(2)
    third = _raw(device)
    assert await third.lookup_and_lock([key(0), key(1), key(2)]) == [True, True, False]
    out = empty(data[1].nbytes)
    assert await third.load([key(1)], [out]) == [True] and bytes(out) == bytes(data[1])
    # key(2)'s slot is free again and reusable; nothing stale is served.
    assert await third.store([key(2)], [data[2]]) == [True]
    await third.close()


async def test_raw_block_verify_on_load_drops_entries_whose_slot_was_reused(tmp_path: Path) -> None:
    device = tmp_path / "dev.img"
    first = _raw(device)
    assert await first.store([key(0)], [payload(0, 5000)]) == [True]
    await first.close()
    second = _raw(device)
    assert await second.delete([key(0)]) == [True]
    assert await second.store([key(1)], [payload(1, 5000)]) == [True]  # same slot, not checkpointed
    second._pool.shutdown(wait=True)  # crash
    third = _raw(device)
    assert await third.lookup_and_lock([key(0), key(1)]) == [False, False]
    await third.close()


async def test_raw_block_refuses_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"io_engine 'io_uring' is not available in this build"):
        _raw(tmp_path / "a.img", io_engine="io_uring")
    with pytest.raises(ConfigError, match=r"slot_bytes \(5000\) must be a multiple of block_align"):
        _raw(tmp_path / "b.img", slot_bytes=5000)
    adapter = _raw(tmp_path / "c.img")
    assert await adapter.store([key(1)], [payload(1, 64 << 10)]) == [False]  # header + payload > slot
    assert adapter.counters.capacity_rejections == 1
    keys = [key(i) for i in range(17)]
    stored = await adapter.store(keys, [payload(i, 1000) for i in range(17)])
    assert stored.count(True) == 16 and (await adapter.usage()).capacity_bytes == 16 * (64 << 10)
    await adapter.close()


def test_raw_block_on_a_loop_device(tmp_path: Path) -> None:
    image = tmp_path / "loop.img"
    with image.open("wb") as f:
        f.truncate((1 << 20) + 16 * (64 << 10))
    attach = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.skip(f"losetup is not permitted here: {attach.stderr.strip() or attach.returncode}")
    device = attach.stdout.strip()
    try:

        async def round_trip() -> None:
            adapter = _raw(Path(device), capacity_bytes=0)
            data = payload(3, 30_000)
            assert await adapter.store([key(3)], [data]) == [True]
            await adapter.close()
            again = _raw(Path(device), capacity_bytes=0)
            out = empty(data.nbytes)
            assert await again.load([key(3)], [out]) == [True] and bytes(out) == bytes(data)
            await again.close()

        asyncio.run(round_trip())
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


async def test_dax_falls_back_from_map_sync_with_a_warning_and_rescans_slots(
    shm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = {
        "type": "dax",
        "device_path": str(shm_dir / "pmem"),
        "max_dax_size_gb": 1 / 1024,
        "slot_bytes": 64 << 10,
    }
    with caplog.at_level(logging.WARNING):
        first = build(spec)
    assert first.synchronous is False and "MAP_SYNC is not supported here" in caplog.text
    data = payload(2, 40_000)
    assert await first.store([key(2), key(3)], [data, payload(3, 100)]) == [True, True]
    assert await first.delete([key(3)]) == [True]
    await first.close()
    second = build(spec)  # no checkpoint: the slot headers are the index
    assert await second.lookup_and_lock([key(2), key(3)]) == [True, False]
    out = empty(data.nbytes)
    assert await second.load([key(2)], [out]) == [True] and bytes(out) == bytes(data)
    assert (await second.usage()).capacity_bytes == 16 * (64 << 10)
    await second.close()
