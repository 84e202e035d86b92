"""`data_path.py --trace-overhead`: the storage-trace recorder's cost, two servers interleaved."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from bench_timing import median
from data_path_engine import CHUNK, INSTANCE, REQUEST_TOKENS, Engine, key
from data_path_ops import lookup_hits, spawn_server, warm_arena
from lmcache.adapters.transport.client import LMCacheClient

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


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
    servers = {mode: spawn_server(l1_gib, tmp / f"server-{mode}.log", None, f) for mode, f in flags.items()}
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
    log = servers["on"].log()
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
