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
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from real_client_report import PEER_VERSION, SERVERS, Run, print_text, summarize, verdicts
from real_client_servers import CHUNK, FakeServer, Spawned, quiet_env
from server_process import stop_pid

REPO = Path(__file__).resolve().parents[1]
PEER_PACKAGES = ("torch==2.13.0", f"lmcache=={PEER_VERSION}")
MARK = "@@real_client@@ "
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


# --------------------------------------------------------------------------------------------- bench
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
