"""L2 adapters against the raw baseline on the same target, in one run, as ratios.

Run: python benchmarks/l2.py [--backends fs,fs_native,resp,s3,nixl,mooncake,resp_cluster,raw_block,dax]
                             [--num-keys 16] [--size-mb 4] [--in-flight 4]
                             [--fs-dir DIR] [--redis-host HOST --redis-port PORT] [--s3-endpoint-url URL]

Per backend, store and load MB/s of N objects through the adapter (built by the L2 factory, resilience
wrapper included, every object verified byte for byte) next to the raw baseline with the same
concurrency on the same target, adapter and raw rounds alternating (a VM disk drifts); MB/s are medians
over rounds, the ratio is the median of the per-round ratios (each adapter round against the raw round
next to it, which cancels most of the drift):

- fs: plain open + write + fsync of the same bytes into the same directory, and open + readinto back
  into resident buffers allocated once, like the adapter's load targets (L1 extents): a fresh buffer per
  read would be malloc's last freed one, hot in the CPU cache, which no L1 extent is (from the page
  cache; with --cold both sides drop the cache first, so loads come from the disk);
- resp: SET / GET of the same sizes through the same redis.asyncio client (redis-benchmark style);
- s3: raw aiobotocore put_object / get_object;
- mooncake: the same Mooncake client's raw `put_from` / `get_into` on registered buffers (a local
  mooncake_master + storage node on loopback);
- resp_cluster: redis-py's RedisCluster SET / GET on a local 3-node Redis Cluster;
- raw_block: O_DIRECT pwrite / pread of aligned buffers on the same preallocated file;
- dax: a plain copy into and out of the same shared mapping (a /dev/shm file);
- fs_native: O_DIRECT pwrite / pread of aligned buffers, one file per object in the same directory
  (with --cold, the fs and fs_native rows show which adapter reads faster from the disk);
- nixl: raw NIXL POSIX transfers of the same buffers to files in the same directory (+ fsync, as fs).

Without --redis-host / --s3-endpoint-url it starts redis-server and moto's S3 server on loopback ports
(both slow the machine they share with the benchmark: compare ratios, not absolute numbers).

With `--serde JSON` (repeatable; `--serde all` is zstd, aesgcm, fp8 and fp8+aesgcm) it measures instead,
per backend, the adapter without serde and with each serde, in alternating rounds of the same run, on KV
computed by the e2e model (`--kv-model bench|test`, src/app/bench_kv.py): store and load MB/s, their
ratios to no serde, the stored share (compression) and fp8's error. An aesgcm without `master_key_path`
gets a fresh key file (0600) in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lmcache.adapters.storage.fs import IO_THREADS
from lmcache.app.bench_l2 import OpStats, bench, run_phase
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_factory import build_l2_adapters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.l2.servers import S3_CREDS, MooncakeCluster, RedisClusterServers, RedisServer, S3Server


def _mbps(stats: OpStats) -> float:
    return stats.nbytes / stats.wall_s / 1e6 if stats.wall_s else 0.0


def drop_cache(directory: Path) -> None:
    """Evict a directory's files from the page cache, so the next reads come from the disk."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


async def _adapter_round(adapter: Any, args: argparse.Namespace) -> tuple[float, float]:
    ns = argparse.Namespace(
        num_keys=args.num_keys, data_size_kb=args.size_mb * 1024, in_flight=args.in_flight, rounds=1
    )
    base = getattr(adapter, "base", None)
    cold = (lambda: drop_cache(base)) if args.cold and base is not None else None
    stats = await bench(adapter, ns, cold)
    return _mbps(stats["store"]), _mbps(stats["load"])


async def compare(spec: dict[str, Any], raw_round: Any, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Alternate adapter and raw rounds (disks and shared servers drift); medians of the per-round rates."""
    adapter = build_l2_adapters(L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter)[0]
    ours, raw = [], []
    try:
        for i in range(args.rounds):
            if i % 2:
                raw.append(await raw_round())
                ours.append(await _adapter_round(adapter, args))
            else:
                ours.append(await _adapter_round(adapter, args))
                raw.append(await raw_round())
    finally:
        await adapter.close()

    def med(rows: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)

    def paired(op: int) -> float:
        return statistics.median(o[op] / r[op] for o, r in zip(ours, raw, strict=True) if r[op])

    return med(ours), med(raw), (paired(0), paired(1))


async def _raw(args: argparse.Namespace, put: Any, get: Any, cold: Path | None = None) -> tuple[float, float]:
    size = args.size_mb << 20
    store, load = OpStats(), OpStats()
    for _ in range(1):
        names = [uuid.uuid4().hex for _ in range(args.num_keys)]
        data = [os.urandom(size) for _ in names]
        puts = [_bind(put, n, d) for n, d in zip(names, data, strict=True)]
        await run_phase(puts, args.in_flight, size, store)
        if cold is not None:
            drop_cache(cold)
        await run_phase([_bind(get, n, size, i) for i, n in enumerate(names)], args.in_flight, size, load)
    return _mbps(store), _mbps(load)


def _bind(fn: Any, *a: Any) -> Any:
    async def call() -> bool:
        await fn(*a)
        return True

    return call


async def raw_fs(directory: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    pool = ThreadPoolExecutor(IO_THREADS)
    loop = asyncio.get_running_loop()
    size = args.size_mb << 20
    outs = [bytearray(size) for _ in range(args.num_keys)]  # resident, as in `bench` (see the docstring)

    def write(name: str, data: bytes) -> None:
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(name: str, size: int, index: int) -> None:
        with (directory / name).open("rb", buffering=0) as f:
            assert f.readinto(outs[index]) == size

    async def put(name: str, data: bytes) -> None:
        await loop.run_in_executor(pool, write, name, data)

    async def get(name: str, size: int, index: int) -> None:
        await loop.run_in_executor(pool, read, name, size, index)

    try:
        return await compare(spec, lambda: _raw(args, put, get, directory if args.cold else None), args)
    finally:
        pool.shutdown()


async def raw_resp(host: str, port: int, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import redis.asyncio as aioredis

    client = aioredis.from_url(f"redis://{host}:{port}", max_connections=8)

    async def put(name: str, data: bytes) -> None:
        await client.set("raw:" + name, data)

    async def get(name: str, size: int, _index: int) -> None:
        assert len(await client.get("raw:" + name)) == size

    async def raw_round() -> tuple[float, float]:
        result = await _raw(args, put, get)
        await client.delete(*[k async for k in client.scan_iter("raw:*")])
        return result

    try:
        return await compare(spec, raw_round, args)
    finally:
        await client.flushall()
        await client.aclose()


async def raw_s3(endpoint_url: str, bucket: str, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint_url, **S3_CREDS
    ) as s3:

        async def put(name: str, data: bytes) -> None:
            await s3.put_object(Bucket=bucket, Key="raw/" + name, Body=data)

        async def get(name: str, size: int, _index: int) -> None:
            reply = await s3.get_object(Bucket=bucket, Key="raw/" + name)
            async with reply["Body"] as stream:
                assert len(await stream.read()) == size

        return await compare(spec, lambda: _raw(args, put, get), args)


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
        result = await _raw(args, put, get)
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
        return await compare(spec, lambda: _raw(args, put, get), args)
    finally:
        await client.aclose()


async def raw_block(path: Path, args: argparse.Namespace, spec: dict[str, Any]) -> Any:
    import mmap

    size = args.size_mb << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    os.ftruncate(fd, (args.num_keys + 1) * (size + 4096))
    pool = ThreadPoolExecutor(4)
    loop = asyncio.get_running_loop()
    slots: dict[str, int] = {}
    outs = [mmap.mmap(-1, size) for _ in range(args.num_keys)]

    local = threading.local()

    def write(name: str, data: bytes) -> None:
        if not hasattr(local, "buf"):
            local.buf = mmap.mmap(-1, size)  # per thread, reused: no page faults per write
        buf = local.buf
        buf[:] = data  # O_DIRECT needs an aligned buffer: one copy, as in the adapter
        os.pwrite(fd, buf, slots.setdefault(name, len(slots)) * (size + 4096))

    async def put(name: str, data: bytes) -> None:
        await loop.run_in_executor(pool, write, name, data)

    async def get(name: str, size: int, index: int) -> None:
        assert (
            await loop.run_in_executor(pool, os.preadv, fd, [outs[index]], slots[name] * (size + 4096))
            == size
        )

    async def raw_round() -> tuple[float, float]:
        slots.clear()
        return await _raw(args, put, get)

    try:
        return await compare(spec, raw_round, args)
    finally:
        pool.shutdown()
        os.close(fd)


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
    loop = asyncio.get_running_loop()

    def write(name: str, data: bytes) -> None:
        start = slots.setdefault(name, len(slots)) * size
        np.copyto(arena[start : start + size], np.frombuffer(data, np.uint8))
        region.flush(start, size)

    def read(name: str, index: int) -> None:
        start = slots[name] * size
        np.copyto(outs[index], arena[start : start + size])

    async def put(name: str, data: bytes) -> None:
        await loop.run_in_executor(pool, write, name, data)

    async def get(name: str, _size: int, index: int) -> None:
        await loop.run_in_executor(pool, read, name, index)

    async def raw_round() -> tuple[float, float]:
        slots.clear()
        return await _raw(args, put, get)

    try:
        return await compare(spec, raw_round, args)
    finally:
        pool.shutdown()
        os.close(fd)


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
        return await compare(spec, lambda: _raw(args, put, get), args)
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
        return await compare(spec, lambda: _raw(args, put, get), args)
    finally:
        pool.shutdown()
        for reg in regs:
            agent.deregister_memory(reg)


def _row(name: str, rates: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]) -> None:
    adapter, raw, ratio = rates
    for i, op in enumerate(("store", "load")):
        print(f"| {name:<7} | {op:<5} | {adapter[i]:10.1f} | {raw[i]:10.1f} | {ratio[i]:5.2f}x |")


ALL_SERDES: list[Any] = [
    {"type": "zstd"},
    {"type": "aesgcm"},
    {"type": "fp8"},
    [{"type": "fp8"}, {"type": "aesgcm"}],
]


def _with_keys(serde: Any, key_path: str) -> Any:
    if isinstance(serde, list):
        return [_with_keys(stage, key_path) for stage in serde]
    if serde.get("type") == "aesgcm" and "master_key_path" not in serde:
        return {**serde, "master_key_path": key_path}
    return serde


async def serde_main(args: argparse.Namespace) -> None:
    from lmcache.app.bench_kv import kv_objects
    from lmcache.app.bench_serde import compare_serdes, print_rows

    work = Path(tempfile.mkdtemp(prefix="lmcache-bench-serde-"))
    key_path = work / "master.key"
    key_path.write_bytes(os.urandom(32))
    key_path.chmod(0o600)
    serdes = [_with_keys(s, str(key_path)) for s in (ALL_SERDES if args.serde == ["all"] else args.serde)]
    size = args.size_mb << 20
    data = [memoryview(b) for b in kv_objects(args.num_keys, size, args.kv_model)]
    print(
        f"{args.num_keys} objects x {args.size_mb} MiB of {args.kv_model}-model KV (bf16) x {args.rounds} "
        f"rounds, {args.in_flight} in flight; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    servers: list[Any] = []
    try:
        for backend in args.backends.split(","):
            spec = _serde_spec(backend, args, work, servers)
            rows = await compare_serdes(spec, serdes, data, rounds=args.rounds, in_flight=args.in_flight)
            print_rows(rows, backend)
            print()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _serde_spec(backend: str, args: argparse.Namespace, work: Path, servers: list[Any]) -> dict[str, Any]:
    if backend == "fs":
        return {"type": "fs", "base_path": str(Path(args.fs_dir or work) / "l2")}
    if backend == "resp":
        host, port = args.redis_host, args.redis_port
        if host is None:
            servers.append(RedisServer(work / "redis").start())
            host, port = "127.0.0.1", servers[-1].port
        return {"type": "resp", "host": host, "port": port, "num_workers": 8}
    if backend == "s3":
        url = args.s3_endpoint_url
        if url is None:
            servers.append(S3Server(bucket=args.s3_bucket).start())
            url = servers[-1].endpoint_url
        return {
            "type": "s3",
            "s3_endpoint": f"s3://{args.s3_bucket}/serde",
            "s3_region": "us-east-1",
            "endpoint_url": url,
            **S3_CREDS,
        }
    raise SystemExit(f"unknown backend {backend!r}")


async def bench_fs_native(args: argparse.Namespace) -> None:
    base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-fsn-"))
    raw_dir = base / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    spec = {"type": "fs_native", "base_path": str(base / "l2"), "num_workers": IO_THREADS}
    _row("fsn-cold" if args.cold else "fs_nativ", await raw_direct(raw_dir, args, spec))
    shutil.rmtree(base, ignore_errors=True)


async def bench_nixl(args: argparse.Namespace) -> None:
    base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-nixl-"))
    (base / "raw").mkdir(parents=True, exist_ok=True)
    params = {"file_path": str(base / "l2"), "use_direct_io": "false", "max_capacity_gb": "64"}
    spec = {"type": "nixl_store_dynamic", "backend": "POSIX", "backend_params": params}
    _row("nixl", await raw_nixl(base / "raw", args, spec))
    shutil.rmtree(base, ignore_errors=True)


async def bench_mooncake(args: argparse.Namespace) -> None:
    cluster = MooncakeCluster(Path(tempfile.mkdtemp(prefix="lmcache-bench-mc-")), segment="2GB").start()
    try:
        spec = {**cluster.spec("bench:"), "num_workers": 4}
        _row("mooncake", await raw_mooncake(cluster, args, spec))
    finally:
        cluster.stop()


async def bench_resp_cluster(args: argparse.Namespace) -> None:
    servers = RedisClusterServers(Path(tempfile.mkdtemp(prefix="lmcache-bench-rc-"))).start()
    try:
        spec = {"type": "resp", "host": "127.0.0.1", "port": servers.port, "num_workers": 8}
        _row("cluster", await raw_cluster(servers.port, args, spec))
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
    _row("raw_blk", await raw_block(base / "raw.img", args, spec))
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
        _row("dax", await raw_dax(base / "raw", args, spec))
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


async def main(args: argparse.Namespace) -> None:
    if args.serde:
        await serde_main(args)
        return
    backends = args.backends.split(",")
    print(f"{args.num_keys} objects x {args.size_mb} MiB x {args.rounds} rounds, {args.in_flight} in flight")
    print("| backend | op | adapter MB/s | raw MB/s | ratio |\n|---|---|---|---|---|")
    if "fs" in backends:
        base = Path(args.fs_dir or tempfile.mkdtemp(prefix="lmcache-bench-"))
        raw_dir = base / "raw"
        raw_dir.mkdir(parents=True, exist_ok=True)
        spec = {"type": "fs", "base_path": str(base / "l2")}
        _row("fs-cold" if args.cold else "fs", await raw_fs(raw_dir, args, spec))
        shutil.rmtree(base, ignore_errors=True)
    if "resp" in backends:
        server = None
        host, port = args.redis_host, args.redis_port
        if host is None:
            server = RedisServer(Path(tempfile.mkdtemp(prefix="lmcache-bench-redis-"))).start()
            host, port = "127.0.0.1", server.port
        try:
            spec = {"type": "resp", "host": host, "port": port, "num_workers": 8}
            _row("resp", await raw_resp(host, port, args, spec))
        finally:
            if server:
                server.stop()
    for name, run in NEW_BACKENDS.items():
        if name in backends:
            await run(args)
    if "s3" in backends:
        s3_server = None
        url, bucket = args.s3_endpoint_url, args.s3_bucket
        if url is None:
            s3_server = S3Server(bucket=bucket).start()
            url = s3_server.endpoint_url
        try:
            spec = {
                "type": "s3",
                "s3_endpoint": f"s3://{bucket}/bench",
                "s3_region": "us-east-1",
                "endpoint_url": url,
                **S3_CREDS,
            }
            _row("s3", await raw_s3(url, bucket, args, spec))
        finally:
            if s3_server:
                s3_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="fs,fs_native,resp,s3,nixl,mooncake,resp_cluster,raw_block,dax")
    parser.add_argument("--num-keys", type=int, default=16)
    parser.add_argument("--size-mb", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="Alternating rounds; medians are shown.")
    parser.add_argument("--fs-dir", default=None)
    parser.add_argument("--cold", action="store_true", help="fs: drop the page cache before each load phase.")
    parser.add_argument("--redis-host", default=None)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--s3-endpoint-url", default=None)
    parser.add_argument("--s3-bucket", default="lmcache-bench")
    parser.add_argument(
        "--serde",
        action="append",
        type=lambda text: text if text == "all" else json.loads(text),
        default=[],
        help="Compare serdes instead of raw I/O: a serde JSON (repeatable), or 'all'.",
    )
    parser.add_argument(
        "--kv-model", choices=("bench", "test"), default="bench", help="Model computing the KV."
    )
    asyncio.run(main(parser.parse_args()))
