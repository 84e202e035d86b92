"""Serving data-path benchmark: a real server's store/retrieve GB/s and lookup latency, against baselines.

Run: python benchmarks/data_path.py [--quick] [--variants] [--layers 32] [--format text|json]

Starts `lmcache server` on a free 127.0.0.1 port, registers a CPU KV cache of the default bench shape
`(2,1024,16,8,128):float16:32` (one POSIX SHM segment per layer, NHD, one engine group) and measures the
store and retrieve op round trips (new tokens every iteration so every store moves bytes), each next to a
single-thread memcpy of the same bytes timed right after it, in two phases: first touch (8192-token
requests right after start-up and registration, every request's time shown) and steady state (after the
arena was written once; 512- and 8192-token requests over one ascending block range, as a fresh engine
allocates, and over scattered block ids; target >= 0.8x memcpy); then lookup round-trip p50/p99 (target
p50 < 300 us) next to a plain pyzmq DEALER/ROUTER echo. `--variants` compares, in-process, the server's
per-chunk gather/scatter (`CpuKVTransfer`) with a batched variant (one gather per layer plane over all
chunks into a staging buffer, then one copy per chunk) and with `index_copy_` over an 8-byte view of the
rows.
`--trace-overhead` instead runs two servers side by side, one recording `--trace-level storage`, and
interleaves the same store/lookup/retrieve rounds on both (alternating which goes first), over
`--sessions` fresh pairs; it prints the median times of each and the recorder's overhead, the median of
the paired on/off ratios (target < 3%); `--control` repeats it with two untraced servers, the noise floor.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import torch
import zmq

from lmcache.adapters.transfer.cpu_kv import CpuKVTransfer
from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.ops import OPS_BY_NAME
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo
from lmcache.domain.arena import Extent
from lmcache.domain.kv_layout import EngineGroup, RegisteredLayout, TensorSpec, build_layout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE = 1024, 16, 8, 128
DTYPE = torch.float16
CHUNK = 256
MODEL = "bench-model"
INSTANCE = 4242
READY = "LMCache cache server is running"
REQUEST_TOKENS = (512, 8192)
TARGET_RATIO = 0.8  # issue 17: steady-state store and retrieve at >= 0.8x a single-thread memcpy
GB = 1e9
ECHO = (
    "import sys, zmq\n"
    "s = zmq.Context().socket(zmq.ROUTER)\n"
    "s.bind(sys.argv[1])\n"
    "while True:\n"
    "    s.send_multipart(s.recv_multipart())\n"
)
_enc = msgspec.msgpack.Encoder()


# --------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(tokens: int, layers: int) -> int:
    """Bytes one request moves: tokens x K/V x layers x heads x head size x fp16."""
    return tokens * 2 * layers * HEADS * HEAD_SIZE * DTYPE.itemsize


def median(xs: list[float]) -> float:
    """The median (0 for no samples)."""
    return statistics.median(xs) if xs else 0.0


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the samples."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Memcpy:
    """The baseline: a single-thread `dst.copy_(src)` between pre-touched buffers of `nbytes`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.src = torch.ones(nbytes, dtype=torch.uint8)
        self.dst = torch.zeros(nbytes, dtype=torch.uint8)
        self.seconds()

    def seconds(self) -> float:
        """One timed copy."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            self.dst.copy_(self.src)
            return time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)


def rtt_us(fn: Callable[[], object], n: int) -> list[float]:
    """Microseconds of `n` calls of `fn`, with the GC off."""
    out = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e6)
    finally:
        gc.enable()
    return out


def stop_pid(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM by PID, wait (SIGKILL after `timeout_s`); the exit code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class Server:
    """An `lmcache server` subprocess.

    Args:
        l1_size_gb: `--l1-size-gb`.
        log: File that receives the server's stdout and stderr.
        threads: OMP_NUM_THREADS of the server (torch intra-op threads); None leaves torch's default.
    """

    def __init__(
        self, l1_size_gb: float, log: Path, threads: int | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "lmcache.app.cli",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(free_port()),
            "--l1-size-gb",
            f"{l1_size_gb:.2f}",
            "--eviction-policy",
            "LRU",
            "--prometheus-port",
            str(free_port()),
            *extra,
        ]
        env = dict(os.environ, DO_NOT_TRACK="1", LMCACHE_TRACK_USAGE="false")
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def url(self) -> str:
        """The ZMQ URL."""
        return f"tcp://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Block until the ready line is logged; returns the seconds it took."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if READY in self.log.read_text(errors="replace"):
                return time.perf_counter() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"server not ready (exit code {self.proc.poll()}); log tail:\n{tail}")

    def stop(self) -> int | None:
        """SIGTERM by PID; the exit code."""
        return stop_pid(self.proc)


class Engine:
    """The engine side: per-layer KV tensors in SHM, token sequences and block ids.

    Args:
        layers: Number of layers.
        seed: RNG seed of tokens, block ids and KV values.
    """

    def __init__(self, layers: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        shape = (2, NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE)
        base = torch.randint(-(2**15), 2**15 - 1, shape, dtype=torch.int16, generator=gen)
        self.layers: list[SharedKVTensor] = []
        try:
            for i in range(layers):
                shared = SharedKVTensor(torch.empty(shape, dtype=DTYPE))
                self.layers.append(shared)
                raw = shared.tensor.view(torch.int16)
                raw.copy_(base)
                raw[:, :, 0, 0, 0] = i  # layers differ, so a swapped layer would show
        except BaseException:
            self.close()
            raise
        self._seq = 0

    def tokens(self, n: int) -> list[int]:
        """A token sequence never used before (its first token is a counter)."""
        self._seq += 1
        return [self._seq] + [self.rng.randrange(1, 1 << 17) for _ in range(n - 1)]

    def blocks(self, n_tokens: int, contiguous: bool = False) -> list[int]:
        """Distinct block ids (never the null block 0) for `n_tokens` tokens.

        Scattered, or one ascending range as an engine's allocator hands out on a fresh cache (LMCache's
        bench does the same).
        """
        count = n_tokens // BLOCK_SIZE
        if contiguous:
            first = self.rng.randrange(1, NUM_BLOCKS - count + 1)
            return list(range(first, first + count))
        return self.rng.sample(range(1, NUM_BLOCKS), count)

    def register(self, client: LMCacheClient) -> None:
        """`register_kv_cache` of all layers as one engine group."""
        group = EngineGroupInfo(0, tuple(range(len(self.layers))), BLOCK_SIZE)
        client.register_kv_cache(
            INSTANCE, [t.descriptor for t in self.layers], MODEL, 1, "vllm", {"kv_layout": "NHD"}, [group]
        )

    def close(self) -> None:
        """Unlink every segment."""
        for shared in self.layers:
            shared.close()


def key(tokens: list[int], request_id: str, worker_id: int | None, readers: int = 0) -> CacheKey:
    """A key over all of `tokens` (a whole number of chunks)."""
    return CacheKey(MODEL, 1, worker_id, tokens, 0, len(tokens), request_id, "", None, readers)


# ---------------------------------------------------------------------------------- server phases
def lookup_hits(client: LMCacheClient, tokens: list[int], rid: str) -> int:
    """Lookup (one reader) + query; the hit count in chunks."""
    client.lookup(key(tokens, rid, None, 1))
    hits = client.query_prefetch_status(rid)
    if hits is None:
        hits = client.wait_prefetch_status(rid, 10.0)
    return int(hits or 0)


def warm_arena(client: LMCacheClient, engine: Engine, l1_bytes: int, layers: int) -> float:
    """Store 8192-token requests until the L1 arena has been written once; the first store's GB/s."""
    tokens_n = REQUEST_TOKENS[-1]
    nbytes = request_bytes(tokens_n, layers)
    first = 0.0
    for i in range(l1_bytes // nbytes + 1):
        toks = engine.tokens(tokens_n)
        t0 = time.perf_counter()
        ok = client.store(key(toks, f"warm-{i}", 0), INSTANCE, [engine.blocks(tokens_n)])
        dt = time.perf_counter() - t0
        if not ok[1]:
            raise RuntimeError(f"warm-up store {i} failed: {ok}")
        client.end_session(f"warm-{i}")
        if i == 0:
            first = nbytes / dt / GB
    return first


def bench_transfer(
    client: LMCacheClient,
    engine: Engine,
    tokens_n: int,
    layers: int,
    iters: int,
    contiguous: bool = False,
    phase: str = "steady",
) -> dict[str, Any]:
    """Timed store and retrieve round trips of `tokens_n`-token requests, each followed by a timed memcpy.

    The last iteration also checks, untimed, that the retrieved blocks equal the stored ones bit for bit.
    Every request's time is kept (`store_all_ms`, `retrieve_all_ms`), not only the median.
    """
    nbytes = request_bytes(tokens_n, layers)
    copy = Memcpy(nbytes)
    store_s: list[float] = []
    retrieve_s: list[float] = []
    copy_s: list[float] = []
    for i in range(iters):
        toks = engine.tokens(tokens_n)
        src = engine.blocks(tokens_n, contiguous)
        rid = f"s{tokens_n}-{i}"
        t0 = time.perf_counter()
        handle, ok = client.store(key(toks, rid, 0), INSTANCE, [src])
        store_s.append(time.perf_counter() - t0)
        copy_s.append(copy.seconds())
        if not ok or not handle:
            raise RuntimeError(f"store of {tokens_n} tokens failed or did nothing ({handle!r}, {ok})")
        client.end_session(rid)
        snapshot = []
        if i == iters - 1:  # bitwise: random fp16 bits include NaNs
            snapshot = [t.tensor.view(torch.int16)[:, src].clone() for t in engine.layers]

        rid = f"r{tokens_n}-{i}"
        hits = lookup_hits(client, toks, rid)
        if hits != tokens_n // CHUNK:
            raise RuntimeError(f"lookup after store hit {hits} of {tokens_n // CHUNK} chunks")
        dst = engine.blocks(tokens_n, contiguous)
        t0 = time.perf_counter()
        handle, ok = client.retrieve(key(toks, rid, 0), INSTANCE, [dst], b"", 0)
        retrieve_s.append(time.perf_counter() - t0)
        copy_s.append(copy.seconds())
        if not ok:
            raise RuntimeError(f"retrieve of {tokens_n} tokens failed ({handle!r}, {ok})")
        client.end_session(rid)
        for n, want in enumerate(snapshot):
            if not torch.equal(engine.layers[n].tensor.view(torch.int16)[:, dst], want):
                raise RuntimeError(f"retrieved blocks differ from the stored ones in layer {n}")
    memcpy = nbytes / median(copy_s) / GB
    store = nbytes / median(store_s) / GB
    retrieve = nbytes / median(retrieve_s) / GB
    return {
        "phase": phase,
        "blocks": "contiguous" if contiguous else "scattered",
        "tokens": tokens_n,
        "bytes": nbytes,
        "iterations": iters,
        "store_all_ms": [round(x * 1e3, 2) for x in store_s],
        "retrieve_all_ms": [round(x * 1e3, 2) for x in retrieve_s],
        "memcpy_gbps": memcpy,
        "store_gbps": store,
        "store_ratio": store / memcpy,
        "store_ms": median(store_s) * 1e3,
        "retrieve_gbps": retrieve,
        "retrieve_ratio": retrieve / memcpy,
        "retrieve_ms": median(retrieve_s) * 1e3,
        "verified": True,
    }


class RawDealer:
    """A synchronous DEALER in the calling thread (no client I/O thread): the server's own share."""

    def __init__(self, url: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.uid = 1 << 40

    def call(self, name: str, *payloads: Any) -> list[bytes]:
        """Send op `name` and wait for its reply frames."""
        self.uid += 1
        op = OPS_BY_NAME[name]
        self.sock.send_multipart([_enc.encode(self.uid), _enc.encode(op.op_id), *map(_enc.encode, payloads)])
        return self.sock.recv_multipart()

    def close(self) -> None:
        """Close the socket and context."""
        self.sock.close(0)
        self.ctx.term()


def bench_lookup(client: LMCacheClient, url: str, engine: Engine, n: int) -> dict[str, Any]:
    """Lookup round trips of a stored 512-token key (one reader); locks and sessions freed untimed."""
    toks = engine.tokens(512)
    client.store(key(toks, "lk-store", 0), INSTANCE, [engine.blocks(512)])
    client.end_session("lk-store")
    raw = RawDealer(url)
    counter = iter(range(10**9))
    misses = 0

    def timed(lookup: Callable[[CacheKey], object], query: bool, calls: int) -> list[float]:
        nonlocal misses
        out = []
        for _ in range(calls):
            rid = f"lk-{next(counter)}"
            k = key(toks, rid, None, 1)
            t0 = time.perf_counter()
            lookup(k)
            hits = client.query_prefetch_status(rid) if query else 2
            out.append((time.perf_counter() - t0) * 1e6)
            misses += hits != 2
            client.free_lookup_locks(k)
            client.end_session(rid)
        return out

    try:
        timed(client.lookup, True, 50)  # warm-up
        gc.collect()
        gc.disable()
        try:
            lookup_us = timed(client.lookup, False, n)
            pair_us = timed(client.lookup, True, n)
            raw_us = timed(lambda k: raw.call("lookup", k, 1), False, n // 2)
        finally:
            gc.enable()
        noop_us = rtt_us(client.noop, n // 2)
        raw_noop_us = rtt_us(lambda: raw.call("noop"), n // 2)
    finally:
        raw.close()
    out: dict[str, Any] = {"lookups": n, "wrong_hit_counts": misses}
    for name, xs in (
        ("lookup", lookup_us),
        ("lookup_query", pair_us),
        ("lookup_raw_dealer", raw_us),
        ("noop", noop_us),
        ("noop_raw_dealer", raw_noop_us),
    ):
        out[f"{name}_p50_us"] = percentile(xs, 0.5)
        out[f"{name}_p99_us"] = percentile(xs, 0.99)
    return out


def bench_echo(n: int) -> dict[str, float]:
    """Baseline: a plain pyzmq DEALER -> ROUTER echo in another process of a lookup's frames."""
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", ECHO, url])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        lookup_key = key(list(range(1000, 1512)), "echo", None, 1)
        frames = [_enc.encode(1), _enc.encode(8), _enc.encode(lookup_key), _enc.encode(1)]  # a lookup's

        def once() -> None:
            sock.send_multipart(frames)
            sock.recv_multipart()

        rtt_us(once, 200)
        xs = rtt_us(once, n)
    finally:
        sock.close(0)
        ctx.term()
        stop_pid(proc, 5.0)
    return {"echo_p50_us": percentile(xs, 0.5), "echo_p99_us": percentile(xs, 0.99)}


# ------------------------------------------------------------------------------- trace overhead
def _round(client: LMCacheClient, engine: Engine, tokens_n: int, rid: str) -> tuple[float, float]:
    """One store, lookup and retrieve of a new `tokens_n`-token request; (store s, retrieve s)."""
    toks = engine.tokens(tokens_n)
    t0 = time.perf_counter()
    handle, ok = client.store(key(toks, f"s-{rid}", 0), INSTANCE, [engine.blocks(tokens_n)])
    store_s = time.perf_counter() - t0
    if not ok or not handle:
        raise RuntimeError(f"store of {tokens_n} tokens failed ({handle!r}, {ok})")
    client.end_session(f"s-{rid}")
    if lookup_hits(client, toks, f"r-{rid}") != tokens_n // CHUNK:
        raise RuntimeError("lookup after store missed")
    t0 = time.perf_counter()
    handle, ok = client.retrieve(key(toks, f"r-{rid}", 0), INSTANCE, [engine.blocks(tokens_n)], b"", 0)
    retrieve_s = time.perf_counter() - t0
    if not ok:
        raise RuntimeError(f"retrieve of {tokens_n} tokens failed ({handle!r}, {ok})")
    client.end_session(f"r-{rid}")
    return store_s, retrieve_s


def _overhead_session(
    engine: Engine, layers: int, l1_gib: float, iters: int, tmp: Path, extra: Sequence[str], control: bool
) -> tuple[dict[tuple[str, str, int], list[float]], list[str], int]:
    """One pair of fresh servers; per (mode, op, tokens), the times of rounds whose order alternates.

    `control`: both servers run without tracing (the noise floor of the comparison).
    """
    trace = tmp / f"overhead-{time.monotonic_ns()}.lct"
    on = list(extra) if control else [*extra, "--trace-level", "storage", "--trace-output", str(trace)]
    flags = {"off": list(extra), "on": on}
    servers = {mode: Server(l1_gib, tmp / f"server-{mode}.log", None, f) for mode, f in flags.items()}
    times: dict[tuple[str, str, int], list[float]] = {}
    try:
        for srv in servers.values():
            srv.wait_ready()
        clients = {mode: LMCacheClient(srv.url, timeout_s=120.0) for mode, srv in servers.items()}
        for client in clients.values():
            engine.register(client)
            warm_arena(client, engine, int(l1_gib * 2**30), layers)
        for r in range(iters):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for tokens_n in REQUEST_TOKENS:
                for rep in range(1 if tokens_n == REQUEST_TOKENS[-1] else 3):
                    for mode in order:
                        store_s, retrieve_s = _round(
                            clients[mode], engine, tokens_n, f"{mode}-{r}-{tokens_n}-{rep}"
                        )
                        times.setdefault((mode, "store", tokens_n), []).append(store_s)
                        times.setdefault((mode, "retrieve", tokens_n), []).append(retrieve_s)
        for client in clients.values():
            client.unregister_kv_cache(INSTANCE)
            client.close()
    finally:
        for srv in servers.values():
            srv.stop()
    log = servers["on"].log.read_text(errors="replace")
    closed = [line for line in log.splitlines() if "Storage trace closed" in line]
    return times, closed[-1:], trace.stat().st_size if trace.exists() else 0


def bench_trace_overhead(
    engine: Engine,
    layers: int,
    l1_gib: float,
    iters: int,
    tmp: Path,
    extra: Sequence[str],
    sessions: int,
    control: bool,
) -> dict[str, Any]:
    """Store/retrieve with the storage-trace recorder off and on, over `sessions` fresh server pairs.

    Per op: the medians and the median of the paired on/off ratios (same round, adjacent in time, so load
    drift cancels). With `control`, the same on a pair of untraced servers (the noise floor).
    """
    out: dict[str, Any] = {"sessions": sessions, "rounds": iters}
    kinds = [("trace", False)] + ([("control", True)] if control else [])
    for kind, is_control in kinds:
        times: dict[tuple[str, str, int], list[float]] = {}
        ratios: dict[tuple[str, int], list[float]] = {}
        recorder: list[str] = []
        trace_bytes = 0
        for _ in range(sessions):
            got, recorder, nbytes = _overhead_session(engine, layers, l1_gib, iters, tmp, extra, is_control)
            trace_bytes += nbytes
            for (mode, op, tokens_n), xs in got.items():
                times.setdefault((mode, op, tokens_n), []).extend(xs)
            for op in ("store", "retrieve"):
                for tokens_n in REQUEST_TOKENS:
                    pairs = zip(got[("on", op, tokens_n)], got[("off", op, tokens_n)], strict=True)
                    ratios.setdefault((op, tokens_n), []).extend(a / b for a, b in pairs if b)
        rows = []
        for tokens_n in REQUEST_TOKENS:
            for op in ("store", "retrieve"):
                off, on = median(times[("off", op, tokens_n)]), median(times[("on", op, tokens_n)])
                rows.append(
                    {
                        "op": op,
                        "tokens": tokens_n,
                        "samples": len(ratios[(op, tokens_n)]),
                        "off_ms": off * 1e3,
                        "on_ms": on * 1e3,
                        "overhead": median(ratios[(op, tokens_n)]) - 1,
                        "medians_overhead": on / off - 1 if off else 0.0,
                    }
                )
        out[kind] = {"rows": rows, "trace_bytes": trace_bytes, "recorder": recorder}
    return out


# ------------------------------------------------------------------------------- in-process variants
class BatchedKV:
    """The batched variant: per layer plane one gather over all chunks into staging, one copy per chunk.

    Only split-K/V token-major layouts (the bench shape), one kernel group.
    """

    def __init__(self, layout: RegisteredLayout, layers: list[torch.Tensor], arena: torch.Tensor) -> None:
        (self.group,) = layout.groups
        self.rows = [[layer[p].view(NUM_BLOCKS, -1) for p in range(2)] for layer in layers]
        self.arena = arena

    def _objects(self, extents: list[Extent]) -> list[torch.Tensor]:
        g = self.group
        return [
            self.arena.narrow(0, e.offset + g.offset, g.nbytes).view(DTYPE).view(g.shape) for e in extents
        ]

    def gather(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Engine blocks -> objects."""
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        idx = torch.as_tensor(block_ids[: len(extents) * bpc], dtype=torch.int64)
        staging = torch.empty(len(idx), self.rows[0][0].shape[1], dtype=DTYPE)
        for j, planes in enumerate(self.rows):
            for p, rows in enumerate(planes):
                torch.index_select(rows, 0, idx, out=staging)
                for c, obj in enumerate(objs):
                    obj[p, j].view(bpc, -1).copy_(staging[c * bpc : (c + 1) * bpc])

    def scatter(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Objects -> engine blocks."""
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        idx = torch.as_tensor(block_ids[: len(extents) * bpc], dtype=torch.int64)
        staging = torch.empty(len(idx), self.rows[0][0].shape[1], dtype=DTYPE)
        for j, planes in enumerate(self.rows):
            for p, rows in enumerate(planes):
                for c, obj in enumerate(objs):
                    staging[c * bpc : (c + 1) * bpc].copy_(obj[p, j].view(bpc, -1))
                rows.index_copy_(0, idx, staging)

    def scatter_wide(self, block_ids: list[int], extents: list[Extent]) -> None:
        """Objects -> engine blocks as CpuKVTransfer.scatter does, with `index_copy_` over int64 views.

        Same ops and loop as the server's per-chunk scatter; only the element type the kernel walks differs
        (index_copy_ on CPU copies element by element, so 8-byte elements do 4x fewer steps than fp16).
        """
        bpc = self.group.blocks_per_chunk
        objs = self._objects(extents)
        ids = torch.as_tensor(block_ids, dtype=torch.int64)
        wide = [[rows.view(torch.int64) for rows in planes] for planes in self.rows]
        for c, obj in enumerate(objs):
            idx = ids[c * bpc : (c + 1) * bpc]
            for j, planes in enumerate(wide):
                for p, rows in enumerate(planes):
                    rows.index_copy_(0, idx, obj[p, j].view(bpc, -1).view(torch.int64))


def _check(tensors: list[torch.Tensor], ids: torch.Tensor, want: list[torch.Tensor], what: str) -> None:
    if not all(torch.equal(t.view(torch.int16)[:, ids], w) for t, w in zip(tensors, want, strict=True)):
        raise RuntimeError(f"{what} disagrees with CpuKVTransfer")


def bench_variants(engine: Engine, layers: int, repeat: int) -> list[dict[str, Any]]:
    """GB/s of CpuKVTransfer vs the variants for one 8192-token request, at 1 thread and torch's default."""
    tensors = [t.tensor for t in engine.layers]
    specs = [TensorSpec("float16", tuple(t.shape), tuple(t.stride())) for t in tensors]
    groups = [EngineGroup(0, tuple(range(layers)), BLOCK_SIZE)]
    layout = build_layout(specs, {"kv_layout": "NHD"}, groups, CHUNK)
    tokens_n = REQUEST_TOKENS[-1]
    chunks = list(range(tokens_n // CHUNK))
    nbytes = request_bytes(tokens_n, layers)
    arena = torch.zeros(len(chunks) * layout.object_bytes, dtype=torch.uint8)
    arena_b = torch.zeros_like(arena)
    extents = [Extent(i * layout.object_bytes, layout.object_bytes) for i in chunks]
    ids = engine.blocks(tokens_n)
    current = CpuKVTransfer(layout, tensors, arena)
    batched = BatchedKV(layout, tensors, arena_b)
    try:
        current.gather([ids], chunks, extents)
        batched.gather(ids, extents)
        if not torch.equal(arena, arena_b):
            raise RuntimeError("batched gather disagrees with CpuKVTransfer.gather")
        out_ids = engine.blocks(tokens_n)
        out = torch.tensor(out_ids)
        current.scatter([out_ids], chunks, extents)
        want = [t.view(torch.int16)[:, out].clone() for t in tensors]
        for fn, what in ((batched.scatter, "batched scatter"), (batched.scatter_wide, "int64-view scatter")):
            for t in tensors:
                t[:, out] = 0
            fn(out_ids, extents)
            _check(tensors, out, want, what)
        del want
        cases: dict[str, dict[str, Callable[[], None]]] = {
            "gather": {
                "per_chunk": lambda: current.gather([ids], chunks, extents),
                "batched": lambda: batched.gather(ids, extents),
            },
            "scatter": {
                "per_chunk": lambda: current.scatter([out_ids], chunks, extents),
                "batched": lambda: batched.scatter(out_ids, extents),
                "per_chunk_int64": lambda: batched.scatter_wide(out_ids, extents),
            },
        }
        copy = Memcpy(nbytes)
        default_threads = torch.get_num_threads()
        rows = []
        try:
            for threads in sorted({1, default_threads}):
                for op, impls in cases.items():
                    times: dict[str, list[float]] = {name: [] for name in impls}
                    copies = []
                    for _ in range(repeat):
                        torch.set_num_threads(threads)
                        for name, fn in impls.items():
                            t0 = time.perf_counter()
                            fn()
                            times[name].append(time.perf_counter() - t0)
                        copies.append(copy.seconds())
                    row: dict[str, Any] = {
                        "op": op,
                        "threads": threads,
                        "memcpy_1t_gbps": nbytes / median(copies) / GB,
                    }
                    for name, xs in times.items():
                        row[f"{name}_gbps"] = nbytes / median(xs) / GB
                    rows.append(row)
        finally:
            torch.set_num_threads(default_threads)
    finally:
        current.close()
    return rows


# ----------------------------------------------------------------------------------------- output
def print_overhead(result: dict[str, Any]) -> None:
    """The plain-text report of `--trace-overhead`."""
    cfg, res = result["config"], result["trace_overhead"]
    load = f"load avg {cfg['loadavg']:.1f} -> {os.getloadavg()[0]:.1f}"
    print(
        f"storage-trace recorder overhead: {cfg['layers']} layers, L1 {cfg['l1_size_gb']:.2f} GiB per "
        f"server, {os.cpu_count()} CPUs, {load}, {res['sessions']} server pairs x {res['rounds']} rounds, "
        "off/on interleaved; p50s = on p50 / off p50 - 1; overhead = median of paired on/off ratios - 1"
    )
    for kind, title in (("trace", "--trace-level storage vs off"), ("control", "control: off vs off")):
        if kind not in res:
            continue
        head = f"{'op':<10}{'tokens':>7}{'pairs':>7}{'off ms p50':>12}{'on ms p50':>11}"
        head += f"{'p50s':>8}{'overhead':>10}"
        print(f"{title}\n{head}" + ("  target < 3%" if kind == "trace" else ""))
        for row in res[kind]["rows"]:
            verdict = ("ok" if row["overhead"] < 0.03 else "MISS") if kind == "trace" else ""
            print(
                f"{row['op']:<10}{row['tokens']:>7}{row['samples']:>7}{row['off_ms']:>12.2f}"
                f"{row['on_ms']:>11.2f}{row['medians_overhead']:>+8.1%}{row['overhead']:>+9.1%}  {verdict}"
            )
    trace = res["trace"]
    summary = " ".join(trace["recorder"]) or "recorder summary not logged"
    print(f"trace files: {trace['trace_bytes']} bytes; last: {summary}")


def print_table(result: dict[str, Any]) -> None:
    """The plain-text report."""
    cfg = result["config"]
    print(
        f"data path: {cfg['layers']} layers x [2, {NUM_BLOCKS}, {BLOCK_SIZE}, {HEADS}, {HEAD_SIZE}] "
        f"float16, chunk {CHUNK}, L1 {cfg['l1_size_gb']:.2f} GiB, {os.cpu_count()} CPUs, server torch "
        f"threads {cfg['server_threads'] or 'default'}, load avg {cfg['loadavg']:.1f}, "
        f"server up in {cfg['server_start_s']:.1f} s"
    )
    print(
        f"first store after the first-touch phase, into an arena never written (8192 tokens, warm-up): "
        f"{result['cold_store_gbps']:.2f} GB/s"
    )
    print()
    print(
        f"{'phase':<12}{'blocks':<11}{'op':<9}{'tokens':>7}{'MiB':>6}{'iters':>6}{'ms p50':>8}{'ms max':>8}"
        f"{'GB/s':>7}{'memcpy 1t':>10}{'ratio':>7}  target >= {TARGET_RATIO}x (steady)"
    )
    for row in result["transfer"]:
        for op in ("store", "retrieve"):
            ratio = row[f"{op}_ratio"]
            verdict = ("ok" if ratio >= TARGET_RATIO else "MISS") if row["phase"] == "steady" else ""
            print(
                f"{row['phase']:<12}{row['blocks']:<11}{op:<9}{row['tokens']:>7}{row['bytes'] / 2**20:>6.0f}"
                f"{row['iterations']:>6}{row[f'{op}_ms']:>8.1f}{max(row[f'{op}_all_ms']):>8.1f}"
                f"{row[f'{op}_gbps']:>7.2f}{row['memcpy_gbps']:>10.2f}{ratio:>6.2f}x  {verdict}"
            )
    first = [row for row in result["transfer"] if row["phase"] == "first-touch"]
    for row in first:
        print(f"first-touch requests, ms: store {row['store_all_ms']}, retrieve {row['retrieve_all_ms']}")
    lk = result["lookup"]
    print()
    print(f"round trips ({lk['lookups']} lookups of 512 tokens, 1 reader)  p50 us  p99 us")
    lines = (
        ("lookup (LMCacheClient)", "lookup"),
        ("lookup + query_prefetch_status", "lookup_query"),
        ("lookup (raw DEALER, no client thread)", "lookup_raw_dealer"),
        ("noop (LMCacheClient)", "noop"),
        ("noop (raw DEALER)", "noop_raw_dealer"),
        ("baseline: pyzmq DEALER/ROUTER echo", "echo"),
    )
    for label, name in lines:
        verdict = ""
        if name == "lookup":
            verdict = f"  target p50 < 300 us {'ok' if lk['lookup_p50_us'] < 300 else 'MISS'}"
        print(f"  {label:<40}{lk[f'{name}_p50_us']:>7.0f}{lk[f'{name}_p99_us']:>8.0f}{verdict}")
    if lk["wrong_hit_counts"]:
        print(f"  ({lk['wrong_hit_counts']} lookups reported a wrong hit count)")
    if result.get("variants"):
        print()
        mib = result["transfer"][-1]["bytes"] / 2**20
        print(f"in-process CPU transfer of one 8192-token request ({mib:.0f} MiB), GB/s:")
        print(
            f"{'op':<9}{'threads':>8}{'per-chunk':>11}{'batched':>9}{'per-chunk int64':>17}{'memcpy 1t':>11}"
        )
        for row in result["variants"]:
            wide = f"{row['per_chunk_int64_gbps']:.2f}" if "per_chunk_int64_gbps" in row else "-"
            print(
                f"{row['op']:<9}{row['threads']:>8}{row['per_chunk_gbps']:>11.2f}{row['batched_gbps']:>9.2f}"
                f"{wide:>17}{row['memcpy_1t_gbps']:>11.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="4 layers, fewer iterations and lookups (< 30 s)")
    add("--variants", action="store_true", help="also compare gather/scatter variants in-process")
    add("--layers", type=int, default=None, help="KV layers (default 32; 4 with --quick)")
    add("--iterations", type=int, default=None, help="timed 8192-token requests (default 5; 4 quick)")
    add("--lookups", type=int, default=None, help="timed lookups (default 2000; 500 quick)")
    add(
        "--server-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the server (default: unset, torch uses one thread per core)",
    )
    add("--server-arg", action="append", default=[], help="extra flag for the server (repeatable)")
    add(
        "--trace-overhead",
        action="store_true",
        help="compare store/retrieve with --trace-level storage off and on (two servers, interleaved)",
    )
    add("--sessions", type=int, default=2, help="--trace-overhead: fresh server pairs (default 2)")
    add("--control", action="store_true", help="--trace-overhead: also measure two untraced servers")
    add("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    layers = args.layers or (4 if args.quick else 32)
    iters = args.iterations or (4 if args.quick else 5)
    lookups = args.lookups or (500 if args.quick else 2000)
    big = request_bytes(REQUEST_TOKENS[-1], layers)
    l1_gib = max(0.25, 2 * big / 2**30 + 0.25)  # two large requests and some room

    result: dict[str, Any] = {}
    if args.trace_overhead:
        with tempfile.TemporaryDirectory(prefix="lmcache-bench-") as tmp:
            engine = Engine(layers)
            try:
                result["config"] = {"layers": layers, "l1_size_gb": l1_gib, "loadavg": os.getloadavg()[0]}
                rounds = args.iterations or (6 if args.quick else 12)
                result["trace_overhead"] = bench_trace_overhead(
                    engine, layers, l1_gib, rounds, Path(tmp), args.server_arg, args.sessions, args.control
                )
            finally:
                engine.close()
        print(json.dumps(result, indent=2)) if args.format == "json" else print_overhead(result)
        return
    with tempfile.TemporaryDirectory(prefix="lmcache-bench-") as tmp:
        engine = Engine(layers)
        server: Server | None = None
        try:
            server = Server(l1_gib, Path(tmp) / "server.log", args.server_threads, args.server_arg)
            start_s = server.wait_ready()
            result["config"] = {
                "layers": layers,
                "l1_size_gb": l1_gib,
                "iterations": iters,
                "server_threads": args.server_threads,
                "server_start_s": start_s,
                "loadavg": os.getloadavg()[0],
            }
            with LMCacheClient(server.url, timeout_s=120.0) as client:
                engine.register(client)
                if client.get_chunk_size() != CHUNK:
                    raise RuntimeError("the server's chunk size is not 256")
                # first touch: right after start-up and registration, as an engine's first requests
                result["transfer"] = [
                    bench_transfer(client, engine, 8192, layers, iters, True, "first-touch")
                ]
                result["cold_store_gbps"] = warm_arena(client, engine, int(l1_gib * 2**30), layers)
                result["transfer"] += [
                    bench_transfer(client, engine, n, layers, iters if n == 8192 else 3 * iters, contiguous)
                    for contiguous in (True, False)
                    for n in REQUEST_TOKENS
                ]
                result["lookup"] = bench_lookup(client, server.url, engine, lookups)
                client.unregister_kv_cache(INSTANCE)
            result["lookup"].update(bench_echo(lookups))
            result["config"]["server_exit_code"] = server.stop()
            server = None
            if args.variants:
                result["variants"] = bench_variants(engine, layers, 3)
        finally:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
            engine.close()
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
