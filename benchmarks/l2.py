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
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lmcache.adapters.storage.fs import IO_THREADS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.l2.servers import S3_CREDS, RedisServer, S3Server

from l2_backends import NEW_BACKENDS
from l2_rounds import compare, print_row, raw_phases


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
        return await compare(spec, lambda: raw_phases(args, put, get, directory if args.cold else None), args)
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
        result = await raw_phases(args, put, get)
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

        return await compare(spec, lambda: raw_phases(args, put, get), args)


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
        print_row("fs-cold" if args.cold else "fs", await raw_fs(raw_dir, args, spec))
        shutil.rmtree(base, ignore_errors=True)
    if "resp" in backends:
        server = None
        host, port = args.redis_host, args.redis_port
        if host is None:
            server = RedisServer(Path(tempfile.mkdtemp(prefix="lmcache-bench-redis-"))).start()
            host, port = "127.0.0.1", server.port
        try:
            spec = {"type": "resp", "host": host, "port": port, "num_workers": 8}
            print_row("resp", await raw_resp(host, port, args, spec))
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
            print_row("s3", await raw_s3(url, bucket, args, spec))
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
