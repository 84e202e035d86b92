"""Raw baselines of benchmarks/l2.py for Mooncake, Redis Cluster, raw_block, dax, fs_native and NIXL.

Each comes with the bench step that starts its server or target; l2.py runs them.

Run them through l2.py: python benchmarks/l2.py --backends fs_native,nixl,mooncake,resp_cluster,raw_block,dax
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage.fs import IO_THREADS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.l2.servers import MooncakeCluster, RedisClusterServers

from l2_rounds import compare, print_row, raw_phases

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


async def raw_mooncake(cluster: MooncakeCluster, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import numpy as np
    from mooncake.store import MooncakeDistributedStore

    client = MooncakeDistributedStore()
    assert client.setup("127.0.0.1", cluster.metadata, 0, 16 << 20, "tcp", "", cluster.master) == 0
    size = args.size_mb << 20
    outs = [np.zeros(size, np.uint8) for _ in range(args.num_keys)]
    for out in outs:
        client.register_buffer(out.ctypes.data, size)
    pool = ThreadPoolExecutor(4)
    loop = asyncio.get_running_loop()
    keep: dict[str, Any] = {}

    async def put(name: str, data: bytes) -> None:
        arr = keep[name] = np.frombuffer(data, np.uint8)
        client.register_buffer(arr.ctypes.data, size)
        assert await loop.run_in_executor(pool, client.put_from, "raw:" + name, arr.ctypes.data, size) == 0

    async def get(name: str, size: int, index: int) -> None:
        got = await loop.run_in_executor(pool, client.get_into, "raw:" + name, outs[index].ctypes.data, size)
        assert got == size

    async def raw_round() -> tuple[float, float]:
        result = await raw_phases(args, put, get)
        for name, arr in keep.items():
            client.unregister_buffer(arr.ctypes.data)
            client.remove("raw:" + name, True)
        keep.clear()
        return result

    try:
        return await compare(spec, raw_round, args)
    finally:
        pool.shutdown()
        client.close()


async def raw_cluster(port: int, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=port)

    async def put(name: str, data: bytes) -> None:
        await client.set("raw:" + name, data)

    async def get(name: str, size: int, _index: int) -> None:
        assert len(await client.get("raw:" + name)) == size

    try:
        return await compare(spec, lambda: raw_phases(args, put, get), args)
    finally:
        await client.aclose()


async def compare_on_pool(
    spec: dict[str, Any],
    args: argparse.Namespace,
    pool: ThreadPoolExecutor,
    slots: dict[str, int],
    write: Callable[[str, bytes], None],
    read: Callable[[str, int, int], None],
    fd: int,
) -> Any:
    """Rounds of a one-file baseline whose blocking writes and reads run on `pool` (raw_block, dax).

    Each round forgets the slots it handed out; the pool and the file are closed at the end.
    """
    loop = asyncio.get_running_loop()

    async def put(name: str, data: bytes) -> None:
        await loop.run_in_executor(pool, write, name, data)

    async def get(name: str, size: int, index: int) -> None:
        await loop.run_in_executor(pool, read, name, size, index)

    async def raw_round() -> tuple[float, float]:
        slots.clear()
        return await raw_phases(args, put, get)

    try:
        return await compare(spec, raw_round, args)
    finally:
        pool.shutdown()
        os.close(fd)


async def raw_block(path: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import mmap

    size = args.size_mb << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    os.ftruncate(fd, (args.num_keys + 1) * (size + 4096))
    pool = ThreadPoolExecutor(4)
    slots: dict[str, int] = {}
    outs = [mmap.mmap(-1, size) for _ in range(args.num_keys)]

    local = threading.local()

    def write(name: str, data: bytes) -> None:
        if not hasattr(local, "buf"):
            local.buf = mmap.mmap(-1, size)  # per thread, reused: no page faults per write
        buf = local.buf
        buf[:] = data  # O_DIRECT needs an aligned buffer: one copy, as in the adapter
        os.pwrite(fd, buf, slots.setdefault(name, len(slots)) * (size + 4096))

    def read(name: str, length: int, index: int) -> None:
        assert os.preadv(fd, [outs[index]], slots[name] * (size + 4096)) == length

    return await compare_on_pool(spec, args, pool, slots, write, read, fd)


async def raw_dax(path: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import mmap

    import numpy as np

    size = args.size_mb << 20
    total = args.num_keys * size
    with path.open("wb") as f:
        f.truncate(total)
    fd = os.open(path, os.O_RDWR)
    region = mmap.mmap(fd, total, flags=mmap.MAP_SHARED)
    arena = np.frombuffer(region, np.uint8)
    outs = [np.zeros(size, np.uint8) for _ in range(args.num_keys)]
    slots: dict[str, int] = {}
    pool = ThreadPoolExecutor(4)

    def write(name: str, data: bytes) -> None:
        start = slots.setdefault(name, len(slots)) * size
        np.copyto(arena[start : start + size], np.frombuffer(data, np.uint8))
        region.flush(start, size)

    def read(name: str, _size: int, index: int) -> None:
        start = slots[name] * size
        np.copyto(outs[index], arena[start : start + size])

    return await compare_on_pool(spec, args, pool, slots, write, read, fd)


async def raw_direct(directory: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    """fs_native's baseline: one file per object written and read with O_DIRECT, aligned buffers."""
    import mmap

    size = args.size_mb << 20
    pool = ThreadPoolExecutor(IO_THREADS)
    loop = asyncio.get_running_loop()
    local = threading.local()
    outs = [mmap.mmap(-1, size) for _ in range(args.num_keys)]

    def write(name: str, data: bytes) -> None:
        if not hasattr(local, "buf"):
            local.buf = mmap.mmap(-1, size)
        local.buf[:] = data  # O_DIRECT needs an aligned buffer: one copy, as in the adapter
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
        try:
            os.pwrite(fd, local.buf, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(name: str, index: int) -> None:
        fd = os.open(directory / name, os.O_RDONLY | os.O_DIRECT)
        try:
            assert os.preadv(fd, [outs[index]], 0) == size
        finally:
            os.close(fd)

    async def put(name: str, data: bytes) -> None:
        await loop.run_in_executor(pool, write, name, data)

    async def get(name: str, _size: int, index: int) -> None:
        await loop.run_in_executor(pool, read, name, index)

    try:
        return await compare(spec, lambda: raw_phases(args, put, get), args)
    finally:
        pool.shutdown()


async def raw_nixl(directory: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import numpy as np

    from lmcache.adapters.storage.nixl_store import nixl_api

    api = nixl_api()
    agent = api.nixl_agent("bench-raw", api.nixl_agent_config(False, False, backends=[]))
    agent.create_backend("POSIX", {})
    size = args.size_mb << 20
    outs = [np.zeros(size, np.uint8) for _ in range(args.num_keys)]
    regs = [agent.register_memory([(o.ctypes.data, size, 0, "")], "DRAM") for o in outs]
    pool = ThreadPoolExecutor(IO_THREADS)
    loop = asyncio.get_running_loop()
    lock = threading.Lock()

    def xfer(op: str, array: Any, path: Path, flags: int) -> None:
        fd = os.open(path, flags, 0o600)
        try:
            if op == "WRITE":
                os.ftruncate(fd, size)
            with lock:
                mem = (
                    agent.register_memory([(array.ctypes.data, size, 0, "")], "DRAM")
                    if op == "WRITE"
                    else None
                )
                file = agent.register_memory([(0, size, fd, "")], "FILE")
                handle = agent.initialize_xfer(
                    op,
                    agent.get_xfer_descs([(array.ctypes.data, size, 0)], "DRAM"),
                    agent.get_xfer_descs([(0, size, fd)], "FILE"),
                    "bench-raw",
                )
                state = agent.transfer(handle)
            while state not in ("DONE", "ERR"):
                with lock:
                    state = agent.check_xfer_state(handle)
            assert state == "DONE"
            with lock:
                agent.release_xfer_handle(handle)
                agent.deregister_memory(file)
                if mem is not None:
                    agent.deregister_memory(mem)
            if op == "WRITE":
                os.fsync(fd)  # as the adapter (and the fs baseline) does
        finally:
            os.close(fd)

    async def put(name: str, data: bytes) -> None:
        array = np.frombuffer(data, np.uint8)
        await loop.run_in_executor(pool, xfer, "WRITE", array, directory / name, os.O_RDWR | os.O_CREAT)

    async def get(name: str, _size: int, index: int) -> None:
        await loop.run_in_executor(pool, xfer, "READ", outs[index], directory / name, os.O_RDONLY)

    try:
        return await compare(spec, lambda: raw_phases(args, put, get), args)
    finally:
        pool.shutdown()
        for reg in regs:
            agent.deregister_memory(reg)


async def bench_fs_native(args: argparse.Namespace) -> None:
    base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-fsn-"))
    raw_dir = base / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    spec = {"type": "fs_native", "base_path": str(base / "l2"), "num_workers": IO_THREADS}
    print_row("fsn-cold" if args.cold else "fs_nativ", await raw_direct(raw_dir, args, spec))
    shutil.rmtree(base, ignore_errors=True)


async def bench_nixl(args: argparse.Namespace) -> None:
    base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-nixl-"))
    (base / "raw").mkdir(parents=True, exist_ok=True)
    params = {"file_path": str(base / "l2"), "use_direct_io": "false", "max_capacity_gb": "64"}
    spec = {"type": "nixl_store_dynamic", "backend": "POSIX", "backend_params": params}
    print_row("nixl", await raw_nixl(base / "raw", args, spec))
    shutil.rmtree(base, ignore_errors=True)


async def bench_mooncake(args: argparse.Namespace) -> None:
    cluster = MooncakeCluster(Path(tempfile.mkdtemp(prefix="lmcache-bench-mc-")), segment="2GB").start()
    try:
        spec = {**cluster.spec("bench:"), "num_workers": 4}
        print_row("mooncake", await raw_mooncake(cluster, args, spec))
    finally:
        cluster.stop()


async def bench_resp_cluster(args: argparse.Namespace) -> None:
    servers = RedisClusterServers(Path(tempfile.mkdtemp(prefix="lmcache-bench-rc-"))).start()
    try:
        spec = {"type": "resp", "host": "127.0.0.1", "port": servers.port, "num_workers": 8}
        print_row("cluster", await raw_cluster(servers.port, args, spec))
    finally:
        servers.stop()


async def bench_raw_block(args: argparse.Namespace) -> None:
    base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-rb-"))
    slot = (args.size_mb << 20) + 4096
    spec = {
        "type": "raw_block",
        "device_path": str(base / "adapter.img"),
        "slot_bytes": slot,
        "capacity_bytes": (1 << 20) + 2 * args.num_keys * slot,
        "meta_total_bytes": 1 << 20,
    }
    print_row("raw_blk", await raw_block(base / "raw.img", args, spec))
    shutil.rmtree(base, ignore_errors=True)


async def bench_dax(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="lmcache-bench-dax-", dir="/dev/shm"))
    slot = (args.size_mb << 20) + 4096
    spec = {
        "type": "dax",
        "device_path": str(base / "pmem"),
        "slot_bytes": slot,
        "max_dax_size_gb": 2 * args.num_keys * slot / 2**30,
    }
    try:
        print_row("dax", await raw_dax(base / "raw", args, spec))
    finally:
        shutil.rmtree(base, ignore_errors=True)


NEW_BACKENDS = {
    "fs_native": bench_fs_native,
    "nixl": bench_nixl,
    "mooncake": bench_mooncake,
    "resp_cluster": bench_resp_cluster,
    "raw_block": bench_raw_block,
    "dax": bench_dax,
}
