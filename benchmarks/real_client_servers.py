"""real_client.py's servers: the 0.5.6 and our `lmcache server` subprocesses, and the instant fake ROUTER.

The fake decodes each request with our op table and answers its success value at once: the floor the
0.5.6 client itself sets under every op.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from lmcache.adapters.transport.ops import resolve
from server_process import ServerProcess, free_port

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.adapters.transport.wire_types import CacheKey

QUIET_ENV = {"DO_NOT_TRACK": "1", "LMCACHE_TRACK_USAGE": "false", "LMCACHE_DISABLE_BANNER": "1"}
CHUNK = 256


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
