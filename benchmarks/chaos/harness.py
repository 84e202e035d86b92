"""Shared pieces of the chaos and fuzz tools: a real `lmcache server` process and a fake CPU engine.

Not a test helper: the tools in this directory are scripts a user runs against this checkout (or an
installed lmcache), and `tests/integration/chaos` runs their short versions. Each engine fills its KV
blocks from a seed derived from (engine, sequence number) before a store, so any later retrieve of that
sequence can be checked byte for byte: a mismatch is data served wrong, never a cache miss.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared server launcher
import server_process as launcher
from lmcache.adapters.transfer.shm_export import SharedKVTensor
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.wire_types import CacheKey, EngineGroupInfo
from server_process import free_port as free_port  # for the tools

if TYPE_CHECKING:
    from collections.abc import Iterator

CHUNK = 256
# 2 layers of [2, 64 blocks, 16 tokens, 2 heads, 64] fp16: 256 KiB per chunk, 512-token requests.
SHAPE = (2, 64, 16, 2, 64)
LAYERS = 2
BLOCKS = list(range(8, 40))
TOKENS = 512
CHUNK_BYTES = CHUNK * 2 * LAYERS * 2 * 64 * 2


def tokens_for(engine: int, seq: int) -> list[int]:
    """A request's tokens: distinct per (engine, sequence number)."""
    return [engine, seq, *([9906] * (TOKENS - 2))]


def request_key(engine: int, seq: int, rid: str, worker: int | None = 0, salt: str = "") -> CacheKey:
    """The key a vLLM adapter would send for the request (one reader per object)."""
    return CacheKey("chaos-model", 1, worker, tokens_for(engine, seq), 0, TOKENS, rid, salt, None, 1)


class ServerProcess(launcher.ServerProcess):
    """`lmcache server` (the shared launcher) in its own session, so a kill can take its resource tracker too.

    Args:
        flags: Extra server flags (later ones win).
        l1_gb: `--l1-size-gb`.
        env: Extra environment.
        log_dir: Where its log goes (a temp dir by default).
    """

    def __init__(
        self, *flags: str, l1_gb: float = 0.1, env: dict[str, str] | None = None, log_dir: str | None = None
    ) -> None:
        log = Path(log_dir or tempfile.mkdtemp(prefix="lmcache-chaos-"))
        super().__init__(*flags, l1_gb=l1_gb, env=env, log_dir=log, new_session=True)

    @property
    def zmq_url(self) -> str:
        """The ZMQ endpoint."""
        return self.url

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident memory from /proc/PID/status.

        `VmRSS`: private, file and shared pages it touched, the L1 arena included; or a part of it
        (`RssAnon`: private memory; `RssShmem`: the SHM pool's touched pages).
        """
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def healthy(self) -> bool:
        """Whether /healthcheck answers 200."""
        try:
            return httpx.get(self.http_url + "/healthcheck", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        """The /status document."""
        body: dict[str, Any] = httpx.get(self.http_url + "/status", timeout=10).json()
        return body


@contextlib.contextmanager
def running_server(
    *flags: str, l1_gb: float = 0.1, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started server, stopped (or killed) on exit."""
    server = ServerProcess(*flags, l1_gb=l1_gb, env=env).start()
    try:
        yield server
    finally:
        server.stop()


class Engine:
    """A fake CPU engine registered as `instance`: seeded block contents, store, retrieve and verify."""

    def __init__(self, url: str, instance: int, timeout_s: float = 10.0) -> None:
        self.instance = instance
        self.client = LMCacheClient(url, timeout_s)
        self.layers = [SharedKVTensor(torch.zeros(SHAPE, dtype=torch.float16)) for _ in range(LAYERS)]
        self._index = torch.tensor(BLOCKS)

    def register(self) -> None:
        """register_kv_cache with one engine group."""
        groups = [EngineGroupInfo(0, tuple(range(LAYERS)), 16)]
        descriptors = [t.descriptor for t in self.layers]
        self.client.register_kv_cache(
            self.instance, descriptors, "chaos-model", 1, "vllm", {"kv_layout": "NHD"}, groups
        )

    def expected(self, seq: int) -> list[torch.Tensor]:
        """The block contents of sequence `seq` of this engine."""
        gen = torch.Generator().manual_seed(self.instance * 1_000_003 + seq)
        shape = (SHAPE[0], len(BLOCKS), *SHAPE[2:])
        return [torch.randn(shape, generator=gen).half() for _ in range(LAYERS)]

    def store(self, seq: int, salt: str = "") -> bool:
        """Fill the blocks with `seq`'s data and store them; True when acknowledged."""
        for layer, data in zip(self.layers, self.expected(seq), strict=True):
            layer.tensor[:, self._index] = data
        rid = f"s-{self.instance}-{seq}-{time.monotonic_ns()}"
        try:
            return bool(
                self.client.store(
                    request_key(self.instance, seq, rid, salt=salt), self.instance, [BLOCKS], b""
                )[1]
            )
        finally:
            self.client.end_session(rid)

    def lookup(self, seq: int, rid: str, salt: str = "") -> int:
        """Lookup + wait, as a scheduler does; the hit in chunks (its objects stay read-locked)."""
        self.client.lookup(request_key(self.instance, seq, rid, worker=None, salt=salt))
        hit = self.client.wait_prefetch_status(rid, 10.0)
        return int(hit or 0)

    def retrieve(self, seq: int, rid: str, salt: str = "") -> tuple[bool, bool]:
        """Retrieve `seq` after its lookup; (served, byte-exact)."""
        for layer in self.layers:
            layer.tensor[:, self._index] = 0
        ok = bool(
            self.client.retrieve(
                request_key(self.instance, seq, rid, salt=salt), self.instance, [BLOCKS], b"", 0
            )[1]
        )
        if not ok:
            return False, True
        got = [layer.tensor[:, self._index] for layer in self.layers]
        return True, all(torch.equal(a, b) for a, b in zip(got, self.expected(seq), strict=True))

    def check(self, seq: int, salt: str = "") -> str:
        """Lookup and retrieve `seq`: "miss", "hit" (byte-exact) or "mismatch"."""
        rid = f"c-{self.instance}-{seq}-{time.monotonic_ns()}"
        try:
            if self.lookup(seq, rid, salt) < TOKENS // CHUNK:
                self.client.free_lookup_locks(request_key(self.instance, seq, rid, worker=None, salt=salt))
                return "miss"
            served, exact = self.retrieve(seq, rid, salt)
            if not served:
                return "miss"
            return "hit" if exact else "mismatch"
        finally:
            self.client.end_session(rid)

    def close(self, unregister: bool = True) -> None:
        """Unregister, close the client and free the KV segments."""
        with contextlib.suppress(Exception):
            if unregister:
                self.client.unregister_kv_cache(self.instance)
        self.client.close()
        for layer in self.layers:
            layer.close()


def worker_main(argv: list[str]) -> int:
    """`python harness.py worker URL INSTANCE FIRST COUNT MODE`: an engine in its own process (to be killed).

    Prints `segments NAME ...` first (so the parent can remove them after a SIGKILL), `ready` once
    registered, then `stored N` for every acknowledged store and `checked N RESULT` for every check.
    """
    url, instance, first, count, mode = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    engine = Engine(url, instance)
    print("segments", *(t.descriptor.shm_name for t in engine.layers), flush=True)
    engine.register()
    print("ready", flush=True)
    for seq in range(first, first + count):
        if mode in ("store", "mixed") and engine.store(seq):
            print("stored", seq, flush=True)
        if mode in ("retrieve", "mixed"):
            print("checked", seq, engine.check(seq), flush=True)
    engine.close()
    return 0


def remove_segments(names: list[str]) -> None:
    """Unlink a killed engine's SHM segments (the engine owns them; nobody else would)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            Path("/dev/shm", name.lstrip("/")).unlink()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        raise SystemExit(worker_main(sys.argv[2:]))
    raise SystemExit("usage: harness.py worker URL INSTANCE FIRST COUNT MODE")
