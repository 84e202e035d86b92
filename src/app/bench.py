"""`lmcache bench server`: drive a running server like an engine and check every byte comes back.

Per request (wire-protocol.md §8): a cold lookup (must miss), a store, a warm lookup (must hit fully), a
retrieve into zeroed blocks, and a checksum comparison of the blocks before the store and after the
retrieve: through the server's `POST /cache/checksums` when `--url` answers (lmcache-driven mode), else
computed locally. Prints p50/p99 per op and GB/s; exits 1 on any failed check.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import torch
from rich.progress import Progress

from lmcache.adapters.transfer.checksums import block_checksums
from lmcache.adapters.transfer.chunk_codec import encode_raw
from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer, torch_dtype
from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import (
    CacheKey,
    EngineGroupInfo,
    RegisterEngineDrivenContextPayload,
)
from lmcache.app import bench_l2
from lmcache.app.bench_args import add_bench_parser
from lmcache.app.bench_trace import check_trace
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import TensorSpec, build_layout

if TYPE_CHECKING:
    import argparse

__all__ = ("add_bench_parser", "run_bench")

_SPEC = re.compile(r"^\((\d+(?:,\d+)*)\):(\w+):(\d+)$")
INSTANCE_ID = 1000


@dataclass
class _Stats:
    times: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    bytes_moved: int = 0
    # Who computed each pass's digests: "server" (POST /cache/checksums) or "local" (the fallback).
    checksums: dict[str, int] = field(default_factory=lambda: {"server": 0, "local": 0})
    lookup_hits: list[int] = field(default_factory=list)  # every lookup's live hit count, in order
    trace: dict[str, Any] | None = None  # --trace: the replay check (bench_trace.py)

    def add(self, op: str, seconds: float) -> None:
        self.times.setdefault(op, []).append(seconds)


def _parse_spec(spec: str) -> tuple[tuple[int, ...], torch.dtype, int]:
    match = _SPEC.match(spec.replace(" ", ""))
    if not match:
        raise SystemExit(f"lmcache bench server: error: --kvcache-shape-spec: cannot parse {spec!r}")
    shape = tuple(int(x) for x in match.group(1).split(","))
    if len(shape) != 5 or shape[0] != 2:
        raise SystemExit("lmcache bench server: error: --kvcache-shape-spec: expected (2,NB,BS,NH,HS)")
    return shape, torch_dtype(match.group(2)), int(match.group(3))


class _Engine:
    """Simulated KV layers plus a client-side transfer for engine-driven copies."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, layers: int, chunk: int) -> None:
        gen = torch.Generator().manual_seed(42)
        self.shape, self.block_size, self.chunk = shape, shape[2], chunk
        self.layers = [
            SharedKVTensor((torch.rand(shape, generator=gen) * 2 - 1).to(dtype)) for _ in range(layers)
        ]
        specs = [
            TensorSpec(str(dtype).removeprefix("torch."), shape, tuple(t.tensor.stride()), 0)
            for t in self.layers
        ]
        self.layout = build_layout(specs, {"kv_layout": "NHD"}, [], chunk)

    def transfer(self, arena: torch.Tensor) -> CpuKVTransfer:
        return CpuKVTransfer(self.layout, [t.tensor for t in self.layers], arena)

    def zero(self, blocks: list[int]) -> None:
        index = torch.tensor(blocks)
        for t in self.layers:
            t.tensor.index_fill_(1, index, 0)

    def checksums(self, blocks: list[int]) -> list[str]:
        return block_checksums([t.tensor for t in self.layers], blocks, self.chunk // self.block_size)

    def close(self) -> None:
        for t in self.layers:
            t.close()


def _key(tokens: list[int], rid: str, worker: int | None, end: int) -> CacheKey:
    return CacheKey("test-model", 1, worker, tokens, 0, end, rid, "", None, 1)


def _poll(client: LMCacheClient, rid: str) -> int:
    for _ in range(50):
        hit = client.query_prefetch_status(rid)
        if hit is not None:
            return hit
        time.sleep(0.05)
    return -1


def _server_checksums(http: httpx.Client | None, blocks: list[int], chunk_blocks: int) -> list[str] | None:
    if http is None:
        return None
    try:
        reply = http.post(
            "/cache/checksums",
            json={
                "block_ids": blocks,
                "chunk_size": chunk_blocks,
                "instance_id": INSTANCE_ID,
                "layerwise": False,
            },
        )
        body = reply.json()
    except (httpx.HTTPError, ValueError):
        return None
    if reply.status_code >= 400 or body.get("status") != "success":
        return None
    sums = body.get("chunk_checksums")
    return sums if isinstance(sums, list) else None


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; returns the exit status (1 on any failed check)."""
    if args.bench_command == "l2":
        return bench_l2.run(args)
    if args.mode == "gpu":
        print(
            "lmcache bench server: error: --mode gpu needs the GPU data path, which this build does not "
            "include; use --mode cpu",
            file=sys.stderr,
        )
        return 2
    shape, dtype, nlayers = _parse_spec(args.kvcache_shape_spec)
    mode = "engine_driven" if args.transfer_mode == "auto" else args.transfer_mode
    client = LMCacheClient(args.rpc_url, args.timeout)
    try:
        chunk = client.get_chunk_size()
    except TimeoutError:
        chunk = 256
    engine = _Engine(shape, dtype, nlayers, chunk)
    stats = _Stats()
    token = os.environ.get("LMCACHE_HTTP_AUTH_TOKEN")  # a server with --http-auth-token needs it
    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = (
        httpx.Client(base_url=args.url, timeout=args.timeout, headers=headers)
        if args.url and mode == "lmcache_driven"
        else None
    )
    try:
        runner = _Runner(client, engine, mode, args, stats, http)
        runner.register()
        seqs = range(args.start, args.end)
        if sys.stderr.isatty() and args.format == "text":
            with Progress(transient=True) as progress:
                task = progress.add_task("bench server", total=len(seqs))
                for seq in seqs:
                    runner.one(seq)
                    progress.advance(task)
        else:
            for seq in seqs:
                runner.one(seq)
        runner.unregister()
        if args.trace:
            stats.trace = check_trace(args.trace, stats.lookup_hits, max(10.0, args.timeout))
            if not stats.trace["ok"]:
                stats.failures.append(f"trace {args.trace}: {stats.trace.get('error')}")
    except TimeoutError as exc:
        stats.failures.append(f"RPC timed out: {exc}")
    finally:
        client.close()
        engine.close()
        if http is not None:
            http.close()
    return _report(args, stats, len(range(args.start, args.end)))


class _Runner:
    def __init__(
        self,
        client: LMCacheClient,
        engine: _Engine,
        mode: str,
        args: argparse.Namespace,
        stats: _Stats,
        http: httpx.Client | None,
    ) -> None:
        self.client, self.engine, self.mode, self.args, self.stats, self.http = (
            client,
            engine,
            mode,
            args,
            stats,
            http,
        )
        self.end = args.num_tokens // engine.chunk * engine.chunk
        self.nblocks = self.end // engine.block_size
        self.obj_bytes = engine.layout.object_bytes
        self.pool: torch.Tensor | None = None
        self._mmap: mmap.mmap | None = None

    def register(self) -> None:
        if self.mode == "lmcache_driven":
            groups = [EngineGroupInfo(0, tuple(range(len(self.engine.layers))), self.engine.block_size)]
            self.client.register_kv_cache(
                INSTANCE_ID,
                [t.descriptor for t in self.engine.layers],
                "test-model",
                1,
                "vllm",
                {"kv_layout": "NHD"},
                groups,
            )
            return
        _, bs, nh, hs = self.engine.shape[1:]
        dtype = str(self.engine.layers[0].tensor.dtype).removeprefix("torch.")
        payload = RegisterEngineDrivenContextPayload(
            INSTANCE_ID,
            "test-model",
            1,
            bs,
            len(self.engine.layers),
            nh * hs,
            dtype,
            False,
            self.engine.chunk,
        )
        reply = self.client.register_engine_driven(payload)
        if reply.shm_name:
            fd = os.open(f"/dev/shm/{reply.shm_name}", os.O_RDWR)
            self._mmap = mmap.mmap(fd, reply.pool_size)
            os.close(fd)
            self.pool = torch.frombuffer(self._mmap, dtype=torch.uint8)

    def unregister(self) -> None:
        if self.mode == "lmcache_driven":
            self.client.unregister_kv_cache(INSTANCE_ID)
        else:
            self.client.unregister_engine_driven(INSTANCE_ID)
            self.pool = None
            if self._mmap is not None:
                self._mmap.close()

    def _timed(self, op: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args)
        self.stats.add(op, time.perf_counter() - started)
        return result

    def one(self, seq: int) -> None:
        tokens = [seq] + [9906] * self.args.num_tokens
        offset = (seq * self.nblocks) % max(self.engine.shape[1] - self.nblocks, 1)
        blocks = list(range(offset, offset + self.nblocks))
        chunks = self.end // self.engine.chunk
        fail = self.stats.failures.append
        cold = f"req-{seq}-cold"
        self._timed("lookup", self.client.lookup, _key(tokens, cold, None, self.end))
        hit = _poll(self.client, cold)
        self.stats.lookup_hits.append(hit)
        if hit != 0:
            fail(f"seq {seq}: cold lookup was not a full miss")
        before = _server_checksums(self.http, blocks, self.engine.chunk // self.engine.block_size)
        local_before = self.engine.checksums(blocks)
        if not self._timed("store", self._store, tokens, cold, blocks):
            fail(f"seq {seq}: store failed")
        self.client.end_session(cold)
        time.sleep(self.args.interval)
        warm = f"req-{seq}-warm"
        self._timed("lookup", self.client.lookup, _key(tokens, warm, None, self.end))
        hit = _poll(self.client, warm)
        self.stats.lookup_hits.append(hit)
        if hit != chunks:
            fail(f"seq {seq}: warm lookup was not a full hit")
        self.engine.zero(blocks)
        if not self._timed("retrieve", self._retrieve, tokens, warm, blocks):
            fail(f"seq {seq}: retrieve failed")
        after = _server_checksums(self.http, blocks, self.engine.chunk // self.engine.block_size)
        if before is not None and after is not None:
            ok = before == after == local_before
            self.stats.checksums["server"] += 1
        else:
            ok = self.engine.checksums(blocks) == local_before
            self.stats.checksums["local"] += 1
        if not ok:
            fail(f"seq {seq}: checksum mismatch")
        self.client.end_session(warm)
        self.stats.bytes_moved += chunks * self.obj_bytes
        time.sleep(self.args.interval)

    def _store(self, tokens: list[int], rid: str, blocks: list[int]) -> bool:
        key = _key(tokens, rid, 0, self.end)
        if self.mode == "lmcache_driven":
            return self.client.store(key, INSTANCE_ID, [blocks], b"stub_ipc_handle")[1]
        prep = self.client.prepare_store(key, INSTANCE_ID)
        chunks = list(range(self.end // self.engine.chunk))
        if self.pool is not None:
            slots = prep.context.get("slots", [])
            if not slots:
                return True
            extents = [Extent(s["offset"], s["length"]) for s in slots]
            self.engine.transfer(self.pool).gather([blocks], prep.context["chunk_indices"], extents)
            return self.client.commit_store(key, INSTANCE_ID)
        staging = torch.empty(len(chunks) * self.obj_bytes, dtype=torch.uint8)
        extents = [Extent(i * self.obj_bytes, self.obj_bytes) for i in chunks]
        self.engine.transfer(staging).gather([blocks], chunks, extents)
        return self.client.commit_store(key, INSTANCE_ID, encode_raw([staging.numpy().tobytes()]))

    def _retrieve(self, tokens: list[int], rid: str, blocks: list[int]) -> bool:
        key = _key(tokens, rid, 0, self.end)
        if self.mode == "lmcache_driven":
            return self.client.retrieve(key, INSTANCE_ID, [blocks], b"stub_ipc_handle", 0)[1]
        reply = self.client.prepare_retrieve(key, INSTANCE_ID)
        if not reply.success:
            return False
        chunks = list(range(self.end // self.engine.chunk))
        if self.pool is not None:
            extents = [Extent(s["offset"], s["length"]) for s in reply.context["slots"]]
            self.engine.transfer(self.pool).scatter([blocks], chunks, extents)
            return self.client.commit_retrieve(key, INSTANCE_ID)
        from lmcache.adapters.transfer.chunk_codec import decode_chunks

        views = decode_chunks(reply.data, self.obj_bytes)
        staging = torch.frombuffer(bytearray(b"".join(views)), dtype=torch.uint8)
        extents = [Extent(i * self.obj_bytes, self.obj_bytes) for i in chunks]
        self.engine.transfer(staging).scatter([blocks], chunks, extents)
        return self.client.commit_retrieve(key, INSTANCE_ID)


def _report(args: argparse.Namespace, stats: _Stats, requests: int) -> int:
    summary: dict[str, Any] = {
        "requests": requests,
        "num_tokens": args.num_tokens,
        "failures": stats.failures,
        "checksum_ok": not stats.failures,
        "checksums": stats.checksums,
        "ops": {},
    }
    if stats.trace is not None:
        summary["trace"] = stats.trace
    for op, times in stats.times.items():
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        summary["ops"][op] = {
            "count": len(times),
            "p50_ms": statistics.median(times) * 1e3,
            "p99_ms": p99 * 1e3,
        }
        if op in ("store", "retrieve") and sum(times) > 0:
            summary["ops"][op]["gb_per_s"] = stats.bytes_moved / sum(times) / 1e9
    if args.format == "json":
        text = json.dumps(summary, indent=2)
    else:
        lines = [f"lmcache bench server: {requests} requests of {args.num_tokens} tokens"]
        for op, row in summary["ops"].items():
            rate = f"  {row['gb_per_s']:.2f} GB/s" if "gb_per_s" in row else ""
            lines.append(
                f"  {op:<9} n={row['count']:<5} p50 {row['p50_ms']:8.3f} ms"
                f"  p99 {row['p99_ms']:8.3f} ms{rate}"
            )
        lines.append(f"  checks: {'all passed' if not stats.failures else f'{len(stats.failures)} FAILED'}")
        server, local = stats.checksums["server"], stats.checksums["local"]
        lines.append(f"  checksums: {server} by the server, {local} computed locally")
        if stats.trace is not None:
            t = stats.trace
            verdict = "reproduced exactly" if t["ok"] else f"NOT reproduced ({t.get('error')})"
            lines.append(
                f"  trace: {t.get('records', 0)} records, replay of the {t['live_lookups']} lookups "
                f"({t['live_hits']} chunks hit live): {verdict}"
            )
        lines.extend(f"    {f}" for f in stats.failures[:20])
        text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:  # noqa: PTH123
            out.write(text + "\n")
    return 1 if stats.failures else 0
