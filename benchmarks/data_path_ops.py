"""The data-path benchmark's server phases: store/retrieve GB/s, lookup round trips, a pyzmq echo."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
import torch
import zmq

from bench_timing import GB, Memcpy, median, percentile, rtt_us
from data_path_engine import CHUNK, INSTANCE, REQUEST_TOKENS, Engine, key, request_bytes
from lmcache.adapters.transport.ops import OPS_BY_NAME
from server_process import ServerProcess, free_port, stop_pid

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.transport.wire_types import CacheKey


ECHO = (
    "import sys, zmq\n"
    "s = zmq.Context().socket(zmq.ROUTER)\n"
    "s.bind(sys.argv[1])\n"
    "while True:\n"
    "    s.send_multipart(s.recv_multipart())\n"
)
_enc = msgspec.msgpack.Encoder()


def spawn_server(
    l1_size_gb: float, log: Path, threads: int | None = None, extra: Sequence[str] = ()
) -> ServerProcess:
    """Start (without waiting for it) the bench's `lmcache server` on free loopback ports.

    Args:
        l1_size_gb: `--l1-size-gb`.
        log: File that receives the server's stdout and stderr.
        threads: OMP_NUM_THREADS of the server (torch intra-op threads); None leaves torch's default.
        extra: More server flags.
    """
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    server = ServerProcess(*extra, l1_gb=f"{l1_size_gb:.2f}", env=env, log_level=None, log_path=log)
    return server.start(wait=False)


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
