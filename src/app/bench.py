"""`lmcache bench server`: drive a running server like an engine and check every byte comes back.

Per request (wire-protocol.md §8): a cold lookup (must miss), a store, a warm lookup (must hit fully), a
retrieve into zeroed blocks, and a checksum comparison of the blocks before the store and after the
retrieve: through the server's `POST /cache/checksums` when its HTTP frontend answers (lmcache-driven
mode), else computed locally. Prints p50/p99 per op and GiB/s; exits 1 on any failed check.

Rerunnable: every request's tokens start with the run id (`--run-id`, random by default), so a second run
against the same server finds none of the first run's keys. A cold lookup that hits anyway is explained
(the keys were there: a repeated run id, or another client storing the same tokens). Every lookup's read
locks are given back on every path: consumed by the retrieve, else freed with `free_lookup_locks`, also
when a check failed or an RPC raised; after the run the server's `/status` lock counts are printed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from lmcache.adapters.transport.client import LMCacheClient
from lmcache.app import bench_l2
from lmcache.app.bench_args import add_bench_parser
from lmcache.app.bench_engine import BenchEngine, bench_key, parse_spec
from lmcache.app.bench_http import BenchHttp, http_url
from lmcache.app.bench_trace import check_trace
from lmcache.domain.units import GIB

if TYPE_CHECKING:
    import argparse

    from lmcache.adapters.transport.wire_types import CacheKey

__all__ = ("add_bench_parser", "run_bench")

FILLER_TOKEN = 9906


@dataclass
class _Stats:
    times: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    bytes_moved: int = 0
    # Who computed each pass's digests: "server" (POST /cache/checksums) or "local" (the fallback).
    checksums: dict[str, int] = field(default_factory=lambda: {"server": 0, "local": 0})
    lookup_hits: list[int] = field(default_factory=list)  # every lookup's live hit count, in order
    trace: dict[str, Any] | None = None  # --trace: the replay check (bench_trace.py)
    locks_after: dict[str, int] | None = None  # the server's /status lock counts after the run

    def add(self, op: str, seconds: float) -> None:
        self.times.setdefault(op, []).append(seconds)


def _poll(client: LMCacheClient, rid: str) -> int:
    for _ in range(50):
        hit = client.query_prefetch_status(rid)
        if hit is not None:
            return hit
        time.sleep(0.05)
    return -1


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
    shape, dtype, nlayers = parse_spec(args.kvcache_shape_spec)
    mode = "engine_driven" if args.transfer_mode == "auto" else args.transfer_mode
    run_id = secrets.randbits(32) if args.run_id is None else args.run_id
    client = LMCacheClient(args.rpc_url, args.timeout)
    try:
        chunk = client.get_chunk_size()
    except TimeoutError:
        chunk = 256
    engine = BenchEngine(client, shape, dtype, nlayers, chunk, mode)
    stats = _Stats()
    http = BenchHttp(http_url(args.url, args.rpc_url, args.http_port), args.timeout, mode)
    seqs = range(args.start, args.end)
    try:
        runner = _Runner(client, engine, args, stats, http, run_id)
        engine.register()
        try:
            if sys.stderr.isatty() and args.format == "text":
                with Progress(transient=True) as progress:
                    task = progress.add_task("bench server", total=len(seqs))
                    for seq in seqs:
                        runner.one(seq)
                        progress.advance(task)
            else:
                for seq in seqs:
                    runner.one(seq)
        finally:
            engine.unregister()  # also aborts our pending engine-driven writes and pool reads
        stats.locks_after = http.lock_counts()
        if args.trace:
            stats.trace = check_trace(args.trace, stats.lookup_hits, max(10.0, args.timeout))
            if not stats.trace["ok"]:
                stats.failures.append(f"trace {args.trace}: {stats.trace.get('error')}")
    except TimeoutError as exc:
        stats.failures.append(f"RPC timed out: {exc}")
    finally:
        client.close()
        engine.close()
        http.close()
    return _report(args, stats, len(seqs), run_id, http)


class _Runner:
    """One request after another; see the module docstring for the checks and the lock rule."""

    def __init__(
        self,
        client: LMCacheClient,
        engine: BenchEngine,
        args: argparse.Namespace,
        stats: _Stats,
        http: BenchHttp,
        run_id: int,
    ) -> None:
        self.client, self.engine, self.args, self.stats, self.http = client, engine, args, stats, http
        self.run_id = run_id
        self.end = args.num_tokens // engine.chunk * engine.chunk
        self.chunks = self.end // engine.chunk
        self.nblocks = self.end // engine.block_size

    def tokens(self, seq: int) -> list[int]:
        """The run id (two 16-bit tokens), the sequence number, then filler: unique per run and request."""
        return [self.run_id >> 16, self.run_id & 0xFFFF, seq] + [FILLER_TOKEN] * self.args.num_tokens

    def _timed(self, op: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args)
        self.stats.add(op, time.perf_counter() - started)
        return result

    def one(self, seq: int) -> None:
        """Run request `seq`; whatever happens, its lookups' unconsumed locks are freed and sessions end."""
        held: list[CacheKey] = []  # lookups whose read locks are still ours to give back
        rids = [f"bench-{self.run_id:08x}-{seq}-{phase}" for phase in ("cold", "warm")]
        try:
            self._request(seq, rids, held)
        finally:
            for key in held:
                with contextlib.suppress(TimeoutError):
                    self.client.free_lookup_locks(key)
            for rid in rids:
                with contextlib.suppress(TimeoutError):
                    self.client.end_session(rid)

    def _lookup(self, tokens: list[int], rid: str, held: list[CacheKey]) -> tuple[CacheKey, int]:
        key = bench_key(tokens, rid, None, self.end)
        held.append(key)
        self._timed("lookup", self.client.lookup, key)
        hit = _poll(self.client, rid)
        self.stats.lookup_hits.append(hit)  # --trace: the replay must reproduce each one
        if hit == 0:
            held.remove(key)  # a miss locks nothing
        return key, hit

    def _request(self, seq: int, rids: list[str], held: list[CacheKey]) -> None:
        tokens, fail = self.tokens(seq), self.stats.failures.append
        offset = (seq * self.nblocks) % max(self.engine.shape[1] - self.nblocks, 1)
        blocks = list(range(offset, offset + self.nblocks))
        cold, warm = rids
        _, hit = self._lookup(tokens, cold, held)
        if hit:
            fail(self._cold_hit(seq, hit))
        before = self.http.checksums(blocks, self.engine.chunk // self.engine.block_size)
        local_before = self.engine.checksums(blocks)
        if not self._timed("store", self.engine.store, tokens, cold, blocks, self.end):
            fail(f"seq {seq}: store failed")
        time.sleep(self.args.interval)
        key, hit = self._lookup(tokens, warm, held)
        if hit != self.chunks:
            fail(f"seq {seq}: warm lookup hit {max(hit, 0)} of {self.chunks} chunks, expected all")
            return  # its locks are freed by one(); no retrieve of a partial hit
        self.engine.zero(blocks)
        held.remove(key)  # the retrieve releases them, whatever its outcome (bench_engine.py)
        if not self._timed("retrieve", self.engine.retrieve, tokens, warm, blocks, self.end):
            fail(f"seq {seq}: retrieve failed")
        after = self.http.checksums(blocks, self.engine.chunk // self.engine.block_size)
        if before is not None and after is not None:
            ok = before == after == local_before
            self.stats.checksums["server"] += 1
        else:
            ok = self.engine.checksums(blocks) == local_before
            self.stats.checksums["local"] += 1
        if not ok:
            fail(f"seq {seq}: checksum mismatch")
        self.stats.bytes_moved += self.chunks * self.engine.layout.object_bytes
        time.sleep(self.args.interval)

    def _cold_hit(self, seq: int, hit: int) -> str:
        if hit < 0:
            return (
                f"seq {seq}: the cold lookup did not finish in 2.5 s; any locks it takes expire after the "
                "server's --l1-read-ttl-seconds"
            )
        return (
            f"seq {seq}: cold lookup hit {hit} of {self.chunks} chunks, expected a miss: the server already "
            f"held these keys. Their tokens carry run id {self.run_id:08x}: it was used against this server "
            "before (a repeated --run-id; leave it out for a fresh one), or another client stored the same "
            "tokens. The lookup's locks were freed."
        )


def _report(args: argparse.Namespace, stats: _Stats, requests: int, run_id: int, http: BenchHttp) -> int:
    summary: dict[str, Any] = {
        "requests": requests,
        "num_tokens": args.num_tokens,
        "run_id": f"{run_id:08x}",
        "failures": stats.failures,
        "checksum_ok": not stats.failures,
        "checksums": stats.checksums,
        "checksums_note": http.note,
        "server_locks_after": stats.locks_after,
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
            summary["ops"][op]["gib_per_s"] = stats.bytes_moved / sum(times) / GIB
    text = json.dumps(summary, indent=2) if args.format == "json" else _text(args, summary, stats)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:  # noqa: PTH123
            out.write(text + "\n")
    return 1 if stats.failures else 0


def _text(args: argparse.Namespace, summary: dict[str, Any], stats: _Stats) -> str:
    lines = [
        f"lmcache bench server: {summary['requests']} requests of {args.num_tokens} tokens, "
        f"run id {summary['run_id']}"
    ]
    for op, row in summary["ops"].items():
        rate = f"  {row['gib_per_s']:.2f} GiB/s" if "gib_per_s" in row else ""
        lines.append(
            f"  {op:<9} n={row['count']:<5} p50 {row['p50_ms']:8.3f} ms  p99 {row['p99_ms']:8.3f} ms{rate}"
        )
    lines.append(f"  checks: {'all passed' if not stats.failures else f'{len(stats.failures)} FAILED'}")
    server, local = stats.checksums["server"], stats.checksums["local"]
    note = f" ({summary['checksums_note']})" if summary["checksums_note"] else ""
    lines.append(f"  checksums: {server} by the server, {local} computed locally{note}")
    locks = stats.locks_after
    if locks is not None:
        lines.append(
            f"  server locks after the run (all clients): {locks['read_locked_objects']} read-locked "
            f"objects, {locks['write_locked_objects']} write-locked"
        )
    if stats.trace is not None:
        t = stats.trace
        verdict = "reproduced exactly" if t["ok"] else f"NOT reproduced ({t.get('error')})"
        lines.append(
            f"  trace: {t.get('records', 0)} records, replay of the {t['live_lookups']} lookups "
            f"({t['live_hits']} chunks hit live): {verdict}"
        )
    lines.extend(f"    {f}" for f in stats.failures[:20])
    return "\n".join(lines)
