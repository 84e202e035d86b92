"""Real `lmcache server` processes on loopback ports, and helpers to drive them like an engine does."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo

if TYPE_CHECKING:
    from collections.abc import Iterator

READY = "LMCache cache server is running..."
# A small engine: 2 layers of [2, NB=64, BS=16, NH=2, HS=64] fp16 -> 1 KiB per token, 256 KiB per chunk.
SHAPE = (2, 64, 16, 2, 64)
LAYERS = 2
CHUNK_BYTES = 256 * 2 * LAYERS * 2 * 64 * 2


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports nobody listens on right now (bound together, so never one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class RunningServer:
    """A server subprocess and what it printed."""

    proc: subprocess.Popen[str]
    url: str
    http_url: str = ""
    lines: list[str] = field(default_factory=list)

    def client(self, timeout_s: float = 10.0) -> LMCacheClient:
        """A new client of this server."""
        return LMCacheClient(self.url, timeout_s)

    def log(self) -> str:
        """Everything logged so far."""
        return "".join(self.lines)

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0) -> str:
        """Wait until the log matches the regular expression; the match, or an AssertionError with the log.

        A reply can reach the client before the server's log line for it reaches our reader thread.
        """
        deadline = time.monotonic() + timeout_s
        while (found := re.search(pattern, self.log())) is None:
            assert time.monotonic() < deadline, f"no {pattern!r} in the server log:\n{self.log()}"
            time.sleep(0.02)
        return found.group(0)

    def stop(self) -> int:
        """SIGTERM, wait, return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _pump(server: RunningServer, ready: threading.Event) -> None:
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.lines.append(line)
        if READY in line:
            ready.set()
    ready.set()


def _flag_value(flags: tuple[str, ...], name: str) -> str | None:
    """The last value given to `name` in `flags` (argparse keeps the last one)."""
    values = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == name]
    values += [f.split("=", 1)[1] for f in flags if f.startswith(name + "=")]
    return values[-1] if values else None


@contextlib.contextmanager
def run_server(*flags: str, l1_gb: str = "0.05") -> Iterator[RunningServer]:
    """Start a server with `flags` on free loopback ports; stop it (SIGTERM) afterwards, check it exited 0.

    The HTTP frontend and the Prometheus endpoint get free loopback ports too, unless `flags` name them
    (later flags win); `RunningServer.http_url` is the frontend's URL.
    """
    port, default_http_port, prometheus_port = free_ports(3)
    http_port = _flag_value(flags, "--http-port") or str(default_http_port)
    cmd = [
        sys.executable,
        "-m",
        "lmcache.app.cli",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--l1-size-gb",
        l1_gb,
        "--eviction-policy",
        "LRU",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        http_port,
        "--prometheus-port",
        str(prometheus_port),
        *flags,
    ]
    env = {**os.environ, "LMCACHE_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    server = RunningServer(proc, f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{http_port}")
    ready = threading.Event()
    threading.Thread(target=_pump, args=(server, ready), daemon=True).start()
    try:
        if not ready.wait(60) or proc.poll() is not None:
            raise RuntimeError(f"server did not start:\n{server.log()}")
        yield server
    finally:
        status = server.stop()
    assert status == 0, server.log()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A default server (`auto` transfer mode, SHM pool)."""
    with run_server() as running:
        yield running


class Engine:
    """A fake CPU engine: KV layers in SHM segments, registered with one client."""

    def __init__(
        self, client: LMCacheClient, instance_id: int = 1000, seed: int = 0, model: str = "m"
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.client = client
        self.instance_id = instance_id
        self.model = model
        self.layers = [SharedKVTensor(torch.randn(SHAPE, generator=gen).half()) for _ in range(LAYERS)]

    def register(self) -> None:
        groups = [EngineGroupInfo(0, tuple(range(LAYERS)), 16)]
        descriptors = [t.descriptor for t in self.layers]
        self.client.register_kv_cache(
            self.instance_id, descriptors, self.model, 1, "vllm", {"kv_layout": "NHD"}, groups
        )

    def blocks(self, block_ids: list[int]) -> list[torch.Tensor]:
        """Copies of the given blocks of every layer."""
        index = torch.tensor(block_ids)
        return [t.tensor[:, index].clone() for t in self.layers]

    def zero(self, block_ids: list[int]) -> None:
        index = torch.tensor(block_ids)
        for t in self.layers:
            t.tensor[:, index] = 0

    def close(self) -> None:
        for t in self.layers:
            t.close()


def key(
    tokens: list[int],
    rid: str,
    worker: int | None = 0,
    start: int = 0,
    end: int | None = None,
    salt: str = "",
) -> CacheKey:
    """A request key as the vLLM adapters send it (one reader per object)."""
    return CacheKey("m", 1, worker, tokens, start, len(tokens) if end is None else end, rid, salt, None, 1)


def tokens_for(seq: int, n: int = 512) -> list[int]:
    """The bench's token pattern: [seq] + [9906] * n."""
    return [seq] + [9906] * n


def hit_chunks(client: LMCacheClient, tokens: list[int], rid: str, salt: str = "") -> int:
    """Lookup + poll, as the scheduler does; returns the hit in chunks."""
    client.lookup(key(tokens, rid, worker=None, end=len(tokens) // 256 * 256, salt=salt))
    for _ in range(100):
        hit = client.query_prefetch_status(rid)
        if hit is not None:
            return hit
        time.sleep(0.01)
    raise AssertionError("prefetch never finished")
