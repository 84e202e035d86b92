"""real_client.py's report: one run's record, per-op statistics, ratios, issue 17's verdicts, the text."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench_timing import percentile

PEER_VERSION = "0.5.6"
OPS = ("cold_lookup", "cold_store", "warm_lookup", "warm_retrieve")
SERVERS = ("peer", "ours", "fake")


@dataclass
class Run:
    """One bench run against one fresh server."""

    round: int
    server: str
    ready_s: float | None = None
    http_ready_s: float | None = None
    bench_exit_code: int | None = None
    server_exit_code: int | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, list[bool]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- summary
def stats(xs: list[float]) -> dict[str, float]:
    """Count, p50 (median), p99 (nearest rank), max and max/p50 of samples in ms."""
    p50 = statistics.median(xs)
    return {
        "n": len(xs),
        "p50": p50,
        "p99": percentile(xs, 0.99),
        "max": max(xs),
        "max_over_p50": max(xs) / p50,
    }


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Per-op stats per server over all rounds, peer/ours ratios, server-added lookup latency, start-up."""
    ops: dict[str, dict[str, dict[str, float]]] = {}
    for op in OPS:
        for name in SERVERS:
            xs = [s["ms"] for r in runs if r.server == name for s in r.samples if s["op"] == op]
            if xs:
                ops.setdefault(op, {})[name] = stats(xs)
    p50 = {(op, name): st["p50"] for op, per in ops.items() for name, st in per.items()}
    ratios = {
        op: p50[op, "peer"] / p50[op, "ours"] for op in OPS if (op, "peer") in p50 and (op, "ours") in p50
    }
    added = {
        op: {name: p50[op, name] - p50[op, "fake"] for name in ("ours", "peer") if (op, name) in p50}
        for op in ("cold_lookup", "warm_lookup")
        if (op, "fake") in p50
    }
    first_store = {
        name: [
            s["ms"]
            for r in runs
            if r.server == name
            for s in r.samples
            if s["op"] == "cold_store" and s["index"] == 0
        ]
        for name in SERVERS
    }
    return {
        "ops": ops,
        "peer_over_ours": ratios,
        "server_added_lookup_ms": added,
        "ready_s": {
            n: [r.ready_s for r in runs if r.server == n and r.ready_s is not None] for n in ("peer", "ours")
        },
        "http_ready_s": {
            n: [r.http_ready_s for r in runs if r.server == n and r.http_ready_s] for n in ("peer", "ours")
        },
        "first_store_ms": {n: xs for n, xs in first_store.items() if xs},
    }


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets: each with the measured value and ok (None when a server needed was not run)."""
    ratio, added = summary["peer_over_ours"], summary["server_added_lookup_ms"]
    ours_store = summary["ops"].get("cold_store", {}).get("ours")
    fake_gap = added.get("warm_lookup", {}).get("ours")
    ready = summary.get("ready_s", {}).get("ours") or []

    def at_least(op: str, want: float) -> tuple[str, bool | None]:
        got = ratio.get(op)
        return ("n/a", None) if got is None else (f"{got:.2f}x", got >= want)

    rows = [
        ("store p50 >= 5x faster than peer", *at_least("cold_store", 5.0)),
        (
            "every store within 2x of ours' p50 (fresh servers)",
            *(
                ("n/a", None)
                if ours_store is None
                else (
                    f"max {ours_store['max']:.1f} ms = {ours_store['max_over_p50']:.2f}x p50",
                    ours_store["max_over_p50"] <= 2.0,
                )
            ),
        ),
        ("retrieve p50 >= 4x faster than peer", *at_least("warm_retrieve", 4.0)),
        ("warm lookup p50 >= 2.5x faster than peer", *at_least("warm_lookup", 2.5)),
        (
            "warm lookup: ours p50 - fake p50 <= 0.3 ms",
            *(("n/a", None) if fake_gap is None else (f"{fake_gap:.3f} ms", fake_gap <= 0.3)),
        ),
        (
            "ours ready (spawn -> ready line) < 2 s, every round",
            *(("n/a", None) if not ready else (f"max {max(ready):.2f} s", max(ready) < 2.0)),
        ),
    ]
    return [{"target": t, "value": v, "ok": ok} for t, v, ok in rows]


def print_requests(runs: list[Run]) -> None:
    """One row per request: its four op times (ms)."""
    print(f"\n{'round':>5} {'server':<6}{'req':>4}" + "".join(f"{op:>15}" for op in OPS) + "   (ms)")
    for run in runs:
        by_seq: dict[int, dict[str, float]] = {}
        for s in run.samples:
            by_seq.setdefault(s["seq"], {})[s["op"]] = s["ms"]
        for seq in sorted(by_seq):
            cells = "".join(f"{by_seq[seq][op]:>15.2f}" if op in by_seq[seq] else f"{'-':>15}" for op in OPS)
            print(f"{run.round:>5} {run.server:<6}{seq:>4}{cells}")


def print_verdicts(result: dict[str, Any], runs: list[Run]) -> None:
    """The targets of issue 17 and every failed run."""
    print("\nissue 17 targets:")
    for v in result["verdicts"]:
        mark = "n/a" if v["ok"] is None else ("ok" if v["ok"] else "MISS")
        print(f"  {v['target']:<52}{v['value']:>36}  {mark}")
    for run in runs:
        if run.failures:
            print(f"FAILED: round {run.round} {run.server}: " + "; ".join(run.failures))


def print_text(result: dict[str, Any], runs: list[Run], per_request: bool) -> None:
    """The plain-text report."""
    cfg, summary = result["config"], result["summary"]
    print(
        f"real client: LMCache {PEER_VERSION} `lmcache bench server` (cpu, lmcache_driven, "
        f"{cfg['num_tokens']} tokens, {cfg['requests']} requests, interval {cfg['interval']} s); "
        f"{cfg['rounds']} rounds, fresh servers, L1 {cfg['l1_size_gb']} GB LRU; {cfg['cpus']} CPUs, load avg "
        f"{cfg['loadavg_start']:.1f} -> {cfg['loadavg_end']:.1f}"
    )
    print(
        f"peer = LMCache {PEER_VERSION} server ({cfg['peer_venv']}), ours = {cfg['ours_bin']}, "
        "fake = instant in-process ROUTER"
    )
    if per_request:
        print_requests(runs)
    print(f"\n{'op':<15}{'server':<7}{'n':>4}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'max/p50':>9}")
    for op, per in summary["ops"].items():
        for name, st in per.items():
            print(
                f"{op:<15}{name:<7}{st['n']:>4}{st['p50']:>10.2f}{st['p99']:>10.2f}{st['max']:>10.2f}"
                f"{st['max_over_p50']:>8.2f}x"
            )
    if summary["peer_over_ours"]:
        print(
            "\npeer p50 / ours p50: "
            + ", ".join(f"{op} {r:.2f}x" for op, r in summary["peer_over_ours"].items())
        )
    for op, per in summary["server_added_lookup_ms"].items():
        if per:
            print(
                f"server-added {op} (p50 - fake p50): "
                + ", ".join(f"{n} {v:+.3f} ms" for n, v in per.items())
            )
    for key, label in (("ready_s", "ready (spawn -> ready line)"), ("http_ready_s", "HTTP /healthcheck 200")):
        line = ", ".join(f"{n} " + " ".join(f"{x:.2f}" for x in xs) for n, xs in summary[key].items() if xs)
        if line:
            print(f"{label}, s: {line}")
    if summary["first_store_ms"]:
        firsts = ", ".join(
            f"{n} " + " ".join(f"{x:.1f}" for x in xs) for n, xs in summary["first_store_ms"].items()
        )
        print(f"first store of each fresh server, ms: {firsts}")
    print_verdicts(result, runs)
