"""Real-client benchmark: LMCache 0.5.6's `lmcache bench server` against the 0.5.6 server, ours and a fake.

Run: python benchmarks/real_client.py [--rounds 3] [--only ours,peer,fake] [--per-request] [--format json]

The load is the published bench (`--mode cpu --transfer-mode lmcache_driven`, 2048 tokens = one 256 MiB
store per request, 12 requests, 0.3 s apart), installed in a scratch venv outside the repo (`--peer-venv`,
created with `pip install torch==2.13.0 lmcache==0.5.6` when it lacks 0.5.6). Each round starts every
server fresh (first touch), runs the bench against it and stops it by PID; the order rotates per round.
"peer" is 0.5.6's own `lmcache server`, "ours" is this project's, "fake" is an in-process ZMQ ROUTER that
answers every op at once from our wire definitions: the client-side floor of a lookup.

Every sample comes from the bench itself: a driver, written to a temp file and run with the peer venv's
python, wraps `BenchResult.record_latency`/`record_check` to print each one as a JSON line, then calls the
`lmcache` console-script entry point. The summary gives p50/p99/max per op, peer/ours ratios, server-added
lookup latency (p50 - fake p50) and verdicts against issue 17's targets. Exit code 1 only when a bench
run fails its correctness checks (or a server does not start); missed targets still exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from bench_timing import percentile
from lmcache.adapters.transport.ops import resolve
from server_process import ServerProcess, free_port, stop_pid

if TYPE_CHECKING:
    from lmcache.adapters.transport.wire_types import CacheKey

REPO = Path(__file__).resolve().parents[1]
PEER_VERSION = "0.5.6"
PEER_PACKAGES = ("torch==2.13.0", f"lmcache=={PEER_VERSION}")
QUIET_ENV = {"DO_NOT_TRACK": "1", "LMCACHE_TRACK_USAGE": "false", "LMCACHE_DISABLE_BANNER": "1"}
OPS = ("cold_lookup", "cold_store", "warm_lookup", "warm_retrieve")
SERVERS = ("peer", "ours", "fake")
MARK = "@@real_client@@ "
CHUNK = 256
# Runs inside the peer venv: only wraps 0.5.6's recorder methods and calls its real CLI.
DRIVER = f"""\
import importlib.metadata, json, sys
from lmcache.cli.commands.bench.server_bench.cases import base, baseline
state = {{"seq": None, "count": {{}}}}
def emit(**kw):
    sys.stdout.write({MARK!r} + json.dumps(kw) + "\\n")
    sys.stdout.flush()
def wrap(name, hook):
    orig = getattr(base.BenchResult, name)
    def wrapped(self, key, value):
        hook(key, value)
        return orig(self, key, value)
    setattr(base.BenchResult, name, wrapped)
def latency(key, ms):
    index = state["count"].get(key, 0)
    state["count"][key] = index + 1
    emit(kind="latency", name=key, ms=ms, index=index, seq=state["seq"])
wrap("record_latency", latency)
wrap("record_check", lambda key, ok: emit(kind="check", name=key, ok=bool(ok), seq=state["seq"]))
run_sequence = baseline.BaselineBenchCase._run_sequence
def tracked(self, client, seq, *rest):
    state["seq"] = seq
    return run_sequence(self, client, seq, *rest)
baseline.BaselineBenchCase._run_sequence = tracked
(entry,) = importlib.metadata.entry_points(group="console_scripts", name="lmcache")
sys.argv = ["lmcache", *sys.argv[1:]]
sys.exit(entry.load()())
"""


def log(msg: str) -> None:
    """Progress on stderr, so `--format json` keeps stdout clean."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ peer venv
def peer_version(venv: Path) -> str | None:
    """The lmcache version installed in `venv`, or None."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('lmcache'))"
    out = subprocess.run(
        [python, "-I", "-c", probe], capture_output=True, text=True, env=quiet_env(), check=False
    )
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def ensure_peer_venv(venv: Path) -> Path:
    """A venv with lmcache 0.5.6, created (outside the repo) when missing."""
    venv = venv.resolve()
    if venv.is_relative_to(REPO):
        raise SystemExit(f"--peer-venv {venv} is inside the repository; pick a path outside {REPO}")
    if peer_version(venv) == PEER_VERSION:
        return venv
    log(f"installing {' '.join(PEER_PACKAGES)} into {venv} (PIP_INDEX_URL etc. are honoured)")
    if not (venv / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, env=quiet_env())
    subprocess.run([venv / "bin" / "pip", "install", *PEER_PACKAGES], check=True, env=quiet_env())
    if (found := peer_version(venv)) != PEER_VERSION:
        raise SystemExit(f"{venv} has lmcache {found}, not {PEER_VERSION}, after pip install")
    return venv


def quiet_env() -> dict[str, str]:
    """The environment of every spawned process: no usage tracking, no banner."""
    return dict(os.environ, **QUIET_ENV)


# ------------------------------------------------------------------------------------------- servers
class Spawned(ServerProcess):
    """A cache server subprocess (the shared launcher) on free loopback ports, started at once."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        super().__init__(
            command=cmd, l1_gb=None, env=QUIET_ENV, log_level=None, log_path=log_path, cwd=log_path.parent
        )
        self.start(wait=False)

    def wait_serving(self, timeout_s: float) -> tuple[float, float]:
        """Seconds from spawn to the ready line, and to the first HTTP 200 on /healthcheck."""
        ready_s = self.wait_ready(timeout_s)
        while time.perf_counter() - self.t0 < timeout_s and self.alive():
            if http_ok(f"{self.http_url}/healthcheck"):
                return ready_s, time.perf_counter() - self.t0
            time.sleep(0.02)
        tail = self.log()[-3000:]
        raise RuntimeError(
            f"server not ready (exit code {self.proc and self.proc.poll()}); log tail:\n{tail}"
        )


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


class FakeServer:
    """An instant ZMQ ROUTER: decodes each request with our op table and answers its success value at once.

    Remembers which token prefixes were stored (chunk by chunk), so the warm lookup reports a full hit.
    """

    def __init__(self) -> None:
        self.rpc_port = free_port()
        self.http_port = free_port()  # nothing listens: checksums are unavailable, the fake holds no data
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(f"tcp://127.0.0.1:{self.rpc_port}")
        self._stored: set[tuple[int, ...]] = set()
        self._hits: dict[str, int] = {}
        self._any = msgspec.msgpack.Decoder()
        self._enc = msgspec.msgpack.Encoder()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            if self._sock.poll(100):
                frames = self._sock.recv_multipart()
                if len(frames) >= 3:  # identity, uid, op: anything shorter is not a request
                    with contextlib.suppress(zmq.ZMQError):  # a vanished client
                        self._sock.send_multipart(self._reply(*frames))

    def _reply(self, identity: bytes, uid: bytes, op_frame: bytes, *payloads: bytes) -> list[bytes]:
        try:
            op, failure, _known = resolve(self._any.decode(op_frame))
        except (msgspec.DecodeError, UnicodeDecodeError):
            op, failure = None, None
        response = failure if op is None else op.failure
        if op is not None and len(payloads) == len(op.payloads):
            try:
                args = [dec.decode(data) for dec, data in zip(op.payloads, payloads, strict=True)]
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
                args = None
            if args is not None:
                response = self._answer(op.name, args, op.failure)
        if response is None:
            return [identity, uid, op_frame]
        return [identity, uid, op_frame, self._enc.encode(response)]

    def _answer(self, name: str, args: list[Any], failure: Any) -> Any:
        if name in ("store", "retrieve"):
            if name == "store":
                key: CacheKey = args[0]
                toks = key.token_ids
                self._stored.update(tuple(toks[:end]) for end in range(key.start + CHUNK, key.end + 1, CHUNK))
            return (b"stub_ipc_handle", True)
        if name == "lookup":
            self._hits[args[0].request_id] = self._hit_chunks(args[0])
            return None
        if name in ("query_prefetch_status", "wait_prefetch_status"):
            return self._hits.get(args[0], 0)
        if name == "end_session":
            self._hits.pop(args[0], None)
            return None
        if name == "get_chunk_size":
            return CHUNK
        return failure  # void ops (register, unregister, free_lookup_locks, clear, ...), noop "OK", ping True

    def _hit_chunks(self, key: CacheKey) -> int:
        toks, full = key.token_ids, key.end // CHUNK
        if tuple(toks[:CHUNK]) not in self._stored:
            return 0
        return next(n for n in range(full, 0, -1) if tuple(toks[: n * CHUNK]) in self._stored)

    def stop(self) -> None:
        """Stop the socket thread and close the socket."""
        self._running = False
        self._thread.join(5)
        self._sock.close(0)
        self._ctx.term()


# --------------------------------------------------------------------------------------------- bench
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


def run_bench(
    venv: Path, driver: Path, rpc_port: int, http_port: int, args: argparse.Namespace, run: Run
) -> None:
    """Run the 0.5.6 bench through the driver; fills `run` with its samples, checks and failures."""
    bench_log = args.log_dir / f"bench-r{run.round}-{run.server}.log"
    cmd = [
        str(venv / "bin" / "python"),
        str(driver),
        *("bench", "server", "--mode", "cpu", "--transfer-mode", "lmcache_driven"),
        *("--num-tokens", str(args.num_tokens), "--start", "0", "--end", str(args.requests)),
        *("--interval", str(args.interval), "--rpc-url", f"tcp://127.0.0.1:{rpc_port}"),
        *("--url", f"http://127.0.0.1:{http_port}"),
    ]
    timeout_s = 180 + args.requests * (2 * args.interval + 20)
    with bench_log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=quiet_env(), cwd=args.log_dir)
        try:
            run.bench_exit_code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            run.failures.append(f"bench did not finish in {timeout_s:.0f} s")
            os.kill(proc.pid, signal.SIGINT)  # the bench unlinks its SHM segments on KeyboardInterrupt
            run.bench_exit_code = stop_pid(proc, 15.0)
            for seg in Path("/dev/shm").glob(f"lmcache_kv_{proc.pid}_*"):  # the KV segments of our bench
                seg.unlink(missing_ok=True)
    for line in bench_log.read_text(errors="replace").splitlines():
        if not line.startswith(MARK):
            continue
        rec = json.loads(line[len(MARK) :])
        if rec["kind"] == "latency":
            op = rec["name"].replace(".", "_")
            run.samples.append({"seq": rec["seq"], "op": op, "index": rec["index"], "ms": rec["ms"]})
        else:
            run.checks.setdefault(rec["name"], []).append(rec["ok"])
    judge(run, args.requests, bench_log)


def judge(run: Run, requests: int, bench_log: Path) -> None:
    """The bench's pass/fail checks (the fake holds no data: its checksums are not judged)."""
    if run.bench_exit_code != 0:
        run.failures.append(f"bench exit code {run.bench_exit_code}")
    for name, results in run.checks.items():
        if run.server == "fake" and name.startswith("checksum"):
            continue
        if bad := [i for i, ok in enumerate(results) if not ok]:
            run.failures.append(f"check {name} failed for request(s) {bad}")
    done = len(run.checks.get("cold_store_succeeded", []))
    if done != requests:
        run.failures.append(f"{done} of {requests} requests completed")
    if run.server != "fake" and run.checks.get("checksum_match", []).count(True) != requests:
        run.failures.append("checksums: not every request matched (cold store vs warm retrieve)")
    if run.failures:
        tail = "\n".join(bench_log.read_text(errors="replace").splitlines()[-25:])
        log(
            f"FAIL round {run.round} {run.server}: " + "; ".join(run.failures) + f"\n--- {bench_log}:\n{tail}"
        )


def server_cmd(name: str, venv: Path, args: argparse.Namespace) -> list[str]:
    """The `lmcache server` command of "peer" or "ours" (ports and eviction policy are added by Spawned)."""
    binary = venv / "bin" / "lmcache" if name == "peer" else args.ours_bin
    extra = list(args.ours_arg) if name == "ours" else []
    return [str(binary), "server", "--l1-size-gb", str(args.l1_size_gb), *extra]


def run_one(name: str, rnd: int, venv: Path, driver: Path, args: argparse.Namespace) -> Run:
    """Start `name` fresh, bench it, stop it by PID."""
    run = Run(rnd, name)
    if name == "fake":
        fake = FakeServer()
        try:
            run_bench(venv, driver, fake.rpc_port, fake.http_port, args, run)
        finally:
            fake.stop()
        return run
    server = Spawned(server_cmd(name, venv, args), args.log_dir / f"server-r{rnd}-{name}.log")
    try:
        run.ready_s, run.http_ready_s = server.wait_serving(args.start_timeout)
        log(f"round {rnd} {name}: ready in {run.ready_s:.2f} s (HTTP {run.http_ready_s:.2f} s); benching")
        run_bench(venv, driver, server.port, server.http_port, args, run)
    except RuntimeError as exc:
        run.failures.append(str(exc))
        log(f"FAIL round {rnd} {name}: {exc}")
    finally:
        run.server_exit_code = server.stop(args.grace)
    return run


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


# ---------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    default_venv = Path("/work/venv056")
    if not default_venv.exists():
        default_venv = Path(tempfile.gettempdir()) / f"lmcache-{PEER_VERSION}-venv"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--peer-venv",
        type=Path,
        default=default_venv,
        help=f"venv with lmcache {PEER_VERSION} (default %(default)s)",
    )
    add(
        "--ours-bin",
        type=Path,
        default=REPO / ".venv" / "bin" / "lmcache",
        help="our `lmcache` (default %(default)s)",
    )
    add(
        "--ours-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra flag for our server, e.g. --ours-arg=--kv-copy-threads=1 (repeatable)",
    )
    add("--rounds", type=int, default=3, help="fresh-server rounds (default 3)")
    add("--requests", type=int, default=12, help="bench requests per run, `--end` (default 12)")
    add("--num-tokens", type=int, default=2048, help="tokens per request (default 2048)")
    add("--interval", type=float, default=0.3, help="bench --interval in s (default 0.3)")
    add("--l1-size-gb", type=float, default=4.0, help="L1 size of both servers (default 4)")
    add("--only", default=",".join(SERVERS), help="comma-separated subset of peer,ours,fake (default all)")
    add("--shuffle", action="store_true", help="random server order per round (default: rotate per round)")
    add("--seed", type=int, default=None, help="seed of --shuffle")
    add("--per-request", action="store_true", help="print every request's times (always in --format json)")
    add("--format", choices=("text", "json"), default="text")
    add("--log-dir", type=Path, default=None, help="keep server and bench logs here (default: a temp dir)")
    add(
        "--start-timeout", type=float, default=180.0, help="s to wait for a server's ready line (default 180)"
    )
    add("--grace", type=float, default=15.0, help="s between SIGTERM and SIGKILL when stopping (default 15)")
    args = parser.parse_args()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(SERVERS):
        parser.error(f"--only: unknown server(s) {sorted(unknown)}; choose from {','.join(SERVERS)}")
    if args.rounds < 1 or args.requests < 1 or args.num_tokens < CHUNK or args.interval < 0:
        parser.error(f"--rounds and --requests must be >= 1, --num-tokens >= {CHUNK}, --interval >= 0")
    if "ours" in args.only and not args.ours_bin.exists():
        parser.error(f"--ours-bin {args.ours_bin} does not exist")
    return args


def main() -> int:
    args = parse_args()
    venv = ensure_peer_venv(args.peer_venv)
    servers = [s for s in SERVERS if s in args.only]
    rng = random.Random(args.seed)
    loadavg_start = os.getloadavg()[0]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="lmcache-real-client-") as tmp:
        args.log_dir = args.log_dir or Path(tmp)
        args.log_dir.mkdir(parents=True, exist_ok=True)
        driver = Path(tmp) / "bench_driver.py"
        driver.write_text(DRIVER)
        for rnd in range(args.rounds):
            order = (
                rng.sample(servers, len(servers))
                if args.shuffle
                else servers[rnd % len(servers) :] + servers[: rnd % len(servers)]
            )
            for name in order:
                log(f"round {rnd} {name}: starting")
                runs.append(run_one(name, rnd, venv, driver, args))
    summary = summarize(runs)
    result = {
        "config": {
            "rounds": args.rounds,
            "requests": args.requests,
            "num_tokens": args.num_tokens,
            "interval": args.interval,
            "l1_size_gb": args.l1_size_gb,
            "peer_venv": str(venv),
            "ours_bin": str(args.ours_bin),
            "servers": servers,
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": os.getloadavg()[0],
        },
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "verdicts": verdicts(summary),
        "failed": any(r.failures for r in runs),
    }
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print_text(result, runs, args.per_request)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
