"""Coordinator heartbeat benchmark: N simulated servers heartbeating at a fixed total rate.

Starts a real `lmcache coordinator` (run_coordinator in a subprocess) on a free loopback port, registers
`--instances` servers, then sends `PUT /instances/{id}/heartbeat` open-loop at `--rate` requests/s in total
for `--duration` seconds, one keep-alive connection per simulated server. Latency is measured from each
request's *scheduled* send time, so a stalled server cannot hide its backlog (no coordinated omission).

Baseline, measured in the same run with the same client and rate: a bare ASGI app on the same uvicorn
stack answering a fixed JSON body, i.e. the cost of HTTP + uvicorn without Litestar or the coordinator.

    python benchmarks/coordinator.py --instances 100 --rate 1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COORDINATOR = (
    "import json, sys\n"
    "from lmcache.app.config import CoordinatorConfig\n"
    "from lmcache.app.coordinator_main import run_coordinator\n"
    "sys.exit(run_coordinator(CoordinatorConfig.model_validate(json.loads(sys.argv[1]))))\n"
)
BASELINE = (
    "import sys, uvicorn\n"
    'BODY = b\'{"status":"ok"}\'\n'
    "async def app(scope, receive, send):\n"
    "    if scope['type'] != 'http':\n"
    "        return\n"
    "    await send({'type': 'http.response.start', 'status': 200,\n"
    "                'headers': [(b'content-type', b'application/json'), (b'content-length', b'15')]})\n"
    "    await send({'type': 'http.response.body', 'body': BODY})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', access_log=False,\n"
    "            timeout_keep_alive=10, server_header=False, lifespan='off')\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


class Conn:
    """A minimal HTTP/1.1 keep-alive connection (cheap enough to leave the CPU to the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")

    def line(self, label: str) -> str:
        rate = len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"{label:<34} {rate:8.1f} req/s | p50 {self.pct(50):6.2f} ms | p99 {self.pct(99):6.2f} ms | "
            f"max {max(self.latencies_ms, default=float('nan')):6.2f} ms | errors {self.errors}"
        )


async def drive(port: int, paths: list[str], method: str, rate: float, duration: float) -> Result:
    """Open-loop load: connection i sends at t0 + i/rate + k * len(paths)/rate."""
    conns = [await Conn.open(port) for _ in paths]
    result = Result()
    period = len(paths) / rate
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2

    async def one(i: int) -> None:
        conn, path = conns[i], paths[i]
        k = 0
        while True:
            scheduled = t0 + i / rate + k * period
            if scheduled - t0 >= duration:
                return
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            status, _ = await conn.request(method, path)
            result.latencies_ms.append((loop.time() - scheduled) * 1000)
            if status != 200:
                result.errors += 1
            k += 1

    await asyncio.gather(*(one(i) for i in range(len(paths))))
    result.elapsed_s = loop.time() - t0
    for conn in conns:
        conn.close()
    return result


async def register(port: int, instances: int) -> list[str]:
    conn = await Conn.open(port)
    ids = []
    for i in range(instances):
        body = json.dumps({"instance_id": f"bench-{i}", "ip": "127.0.0.1", "http_port": 10000 + i}).encode()
        status, payload = await conn.request("POST", "/instances", body)
        if status != 200:
            raise SystemExit(f"registration failed: HTTP {status} {payload!r}")
        ids.append(json.loads(payload)["instance_id"])
    conn.close()
    return ids


def start(code: str, arg: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, arg], cwd=REPO, env=env, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="heartbeats per second, all instances")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    parser.add_argument("--target-p99-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPUs, {args.instances} instances, {args.rate:.0f} req/s for {args.duration:.0f} s"
    )

    port = free_port()
    config = {"host": "127.0.0.1", "port": port, "instance_timeout": 3600, "enable_startup_resync": False}
    coordinator = start(COORDINATOR, json.dumps(config))
    try:
        wait_port(port, coordinator)
        ids = asyncio.run(register(port, args.instances))
        paths = [f"/instances/{i}/heartbeat" for i in ids]
        asyncio.run(drive(port, paths, "PUT", args.rate, 1.0))  # warm-up
        measured = asyncio.run(drive(port, paths, "PUT", args.rate, args.duration))
    finally:
        status = stop(coordinator)

    port = free_port()
    baseline_proc = start(BASELINE, str(port))
    try:
        wait_port(port, baseline_proc)
        paths = [f"/instances/{i}/heartbeat" for i in ids]
        asyncio.run(drive(port, paths, "PUT", args.rate, 1.0))
        baseline = asyncio.run(drive(port, paths, "PUT", args.rate, args.duration))
    finally:
        stop(baseline_proc)

    print(measured.line("coordinator PUT heartbeat"))
    print(baseline.line("baseline bare uvicorn ASGI"))
    ratio = measured.pct(99) / baseline.pct(99)
    ratio50 = measured.pct(50) / baseline.pct(50)
    ok = measured.pct(99) < args.target_p99_ms and measured.errors == 0
    print(
        f"p99 ratio coordinator/baseline {ratio:.2f}x | p50 ratio {ratio50:.2f}x | "
        f"target p99 < {args.target_p99_ms:.0f} ms: {'PASS' if ok else 'FAIL'} | coordinator exit {status}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
