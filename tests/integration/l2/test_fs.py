"""fs specifics: crash leftovers cleaned at start-up, index rebuilt from the files, O_DIRECT, capacity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmcache.adapters.storage.fs import FsL2Adapter
from tests.integration.l2.conftest import build
from tests.integration.l2.test_contract import empty, key, payload


def _fs(tmp_path: Path, **extra: Any) -> Any:
    return build({"type": "fs", "base_path": str(tmp_path / "l2"), **extra})


async def test_restart_rebuilds_the_index_from_the_directory(tmp_path: Path) -> None:
    first = _fs(tmp_path)
    keys = [key(i, salt=f"s{i % 3}") for i in range(20)]
    data = [payload(i, 1000 + i) for i in range(20)]
    assert all(await first.store(keys, data))
    await first.close()
    second = _fs(tmp_path)
    assert await second.lookup_and_lock(keys) == [True] * 20
    usage = await second.usage()
    assert usage.objects == 20 and set(usage.by_salt) == {"s0", "s1", "s2"}
    out = [empty(d.nbytes) for d in data]
    assert all(await second.load(keys, out))
    assert [bytes(o) for o in out] == [bytes(d) for d in data]
    await second.close()


async def test_crash_mid_write_is_invisible_and_cleaned_at_start_up(tmp_path: Path) -> None:
    first = _fs(tmp_path, relative_tmp_dir="stage")
    assert await first.store([key(1)], [payload(1, 4000)]) == [True]
    await first.close()
    # A crash mid-write leaves a temp file (never renamed) and, from a crash mid-copy of a whole tree,
    # a truncated object file; neither may become visible.
    stage = tmp_path / "l2" / "stage"
    (stage / "deadbeef.123-abcd.tmp").write_bytes(b"LMKV partial")
    real = Path(first._path(key(1)))
    victim = Path(first._path(key(2)))
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(real.read_bytes()[:-100])
    second = _fs(tmp_path, relative_tmp_dir="stage")
    assert list(stage.iterdir()) == []
    assert not victim.exists()
    assert second.counters.corrupt == 1
    assert await second.lookup_and_lock([key(1), key(2)]) == [True, False]
    assert (await second.list_keys()).keys == (key(1),)
    await second.close()


async def test_odirect_round_trip_and_cross_mode_reads(tmp_path: Path) -> None:
    direct = _fs(tmp_path, use_odirect=True, read_ahead_size=1 << 20)
    data = payload(3, 3 * 4096 + 123)
    assert await direct.store([key(3)], [data]) == [True]
    out = empty(data.nbytes)
    assert await direct.load([key(3)], [out]) == [True] and bytes(out) == bytes(data)
    await direct.close()
    buffered = _fs(tmp_path)
    out = empty(data.nbytes)
    assert await buffered.load([key(3)], [out]) == [True] and bytes(out) == bytes(data)
    await buffered.close()


async def test_capacity_refuses_stores_that_do_not_fit(tmp_path: Path) -> None:
    adapter = _fs(tmp_path, max_capacity_gb=64 * 1024 / 2**30)  # 64 KiB
    assert await adapter.store([key(1)], [payload(1, 40_000)]) == [True]
    assert await adapter.store([key(2)], [payload(2, 40_000)]) == [False]
    usage = await adapter.usage()
    assert usage.capacity_bytes == 64 * 1024 and usage.objects == 1
    assert adapter.counters.capacity_rejections == 1
    await adapter.delete([key(1)])
    assert await adapter.store([key(2)], [payload(2, 40_000)]) == [True]
    await adapter.close()


async def test_shared_directory_sees_other_writers(tmp_path: Path) -> None:
    a = _fs(tmp_path, shared=True)
    b = _fs(tmp_path, shared=True)
    data = payload(7, 9000)
    assert await a.store([key(7)], [data]) == [True]
    assert await b.lookup_and_lock([key(7)]) == [True]
    out = empty(data.nbytes)
    assert await b.load([key(7)], [out]) == [True] and bytes(out) == bytes(data)
    await a.delete([key(7)])
    assert await b.load([key(7)], [empty(9000)]) == [False]
    assert key(7) not in b._index
    await a.close()
    await b.close()


async def test_shared_listing_includes_other_writers_and_drops_vanished_objects(tmp_path: Path) -> None:
    a = _fs(tmp_path, shared=True)
    b = _fs(tmp_path, shared=True)
    assert await a.store([key(1), key(2)], [payload(1, 500), payload(2, 500)]) == [True, True]
    assert await b.store([key(3)], [payload(3, 500)]) == [True]
    listed = await b.list_keys(None, 10)
    assert set(listed.keys) == {key(1), key(2), key(3)} and listed.next_cursor is None
    assert (await b.usage()).objects == 3
    await a.delete([key(1)])
    assert set((await b.list_keys(None, 10)).keys) == {key(2), key(3)}
    unshared = _fs(tmp_path / "other")
    assert await unshared.store([key(4)], [payload(4, 500)]) == [True]
    assert set((await unshared.list_keys(None, 10)).keys) == {key(4)}
    for adapter in (a, b, unshared):
        await adapter.close()


async def test_persist_disabled_removes_objects_on_close(tmp_path: Path) -> None:
    adapter = _fs(tmp_path, persist_enabled=False)
    await adapter.store([key(1)], [payload(1, 100)])
    await adapter.close()
    assert not any(p.suffix == ".kv" for p in (tmp_path / "l2").rglob("*"))
    assert isinstance(adapter, FsL2Adapter)
    assert list((tmp_path / "l2" / ".tmp").iterdir()) == []


async def test_files_are_owner_only(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        adapter = _fs(tmp_path, relative_tmp_dir="stage")
        assert await adapter.store([key(1)], [payload(1, 4000)]) == [True]
    finally:
        os.umask(old)
    obj = Path(adapter._path(key(1)))
    assert obj.stat().st_mode & 0o777 == 0o600
    for directory in (tmp_path / "l2", tmp_path / "l2" / "stage", obj.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    await adapter.close()


async def test_a_damaged_file_is_moved_aside_once_and_survives_for_inspection(tmp_path: Path) -> None:
    adapter = _fs(tmp_path)
    assert await adapter.store([key(1)], [payload(1, 4000)]) == [True]
    path = Path(adapter._path(key(1)))
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(blob)
    assert await adapter.load([key(1)], [empty(4000)]) == [False]
    moved = list((tmp_path / "l2" / ".quarantine").iterdir())
    assert not path.exists() and len(moved) == 1 and moved[0].read_bytes() == bytes(blob)
    assert (await adapter.usage()).objects == 0
    await adapter.close()
    # A restart does not index the quarantined file again.
    again = _fs(tmp_path)
    assert await again.lookup_and_lock([key(1)]) == [False] and again.counters.corrupt == 0
    await again.close()


def test_quarantine_leaves_a_file_that_was_rewritten_meanwhile(tmp_path: Path) -> None:
    from lmcache.adapters.storage import _fs_io

    damaged = tmp_path / "a.kv"
    damaged.write_bytes(b"old")
    st = damaged.stat()
    fresh = tmp_path / "b.kv"
    fresh.write_bytes(b"new")
    fresh.rename(damaged)  # a writer renamed a whole new object into place after our read
    assert _fs_io.quarantine(str(damaged), (st.st_dev, st.st_ino), tmp_path / "q") is None
    assert damaged.read_bytes() == b"new"
    assert _fs_io.quarantine(str(tmp_path / "gone.kv"), None, tmp_path / "q") is None


async def test_objects_written_after_start_up_are_found_and_misses_are_cached_briefly(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from lmcache.adapters.storage import _fs_io, fs

    reader = _fs(tmp_path)  # not marked shared: another server's later writes are still found
    stats: list[int] = []
    real = _fs_io.sizes_of
    monkeypatch.setattr(_fs_io, "sizes_of", lambda paths: stats.append(len(paths)) or real(paths))
    assert await reader.lookup_and_lock([key(1), key(2)]) == [False, False]
    assert await reader.lookup_and_lock([key(1), key(2)]) == [False, False]
    assert stats == [2]  # the second lookup was answered from the negative cache
    writer = _fs(tmp_path)
    data = payload(1, 6000)
    assert await writer.store([key(1)], [data]) == [True]
    clock = [fs.time.monotonic() + fs.NEGATIVE_TTL_S + 0.01]
    monkeypatch.setattr(fs.time, "monotonic", lambda: clock[0])
    assert await reader.lookup_and_lock([key(1), key(2)]) == [True, False]
    assert stats == [2, 2]
    out = empty(data.nbytes)
    assert await reader.load([key(1)], [out]) == [True] and bytes(out) == bytes(data)
    await reader.close()
    await writer.close()


async def test_fs_native_reads_aligned_buffers_directly_and_others_through_fs(tmp_path: Path) -> None:
    import mmap

    from lmcache.adapters.storage import fs_native

    adapter = build({"type": "fs_native", "base_path": str(tmp_path / "n"), "num_workers": 2})
    data = payload(1, 3 * 4096 + 100)  # a tail past the last aligned block
    assert await adapter.store([key(1)], [data]) == [True]
    arena = mmap.mmap(-1, 8 * 4096)
    aligned = memoryview(arena)[4096 : 4096 + data.nbytes]
    out = empty(data.nbytes)
    direct = fs_native.read_direct_into(adapter._path(key(1)), key(1), aligned)
    assert (direct == data.nbytes) is (adapter.odirect and adapter._direct_supported())
    assert await adapter.load([key(1), key(1)], [aligned, out]) == [True, True]
    assert bytes(aligned) == bytes(data) == bytes(out)
    aligned.release()
    await adapter.close()
