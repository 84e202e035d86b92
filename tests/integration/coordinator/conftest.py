"""Fixtures: a real coordinator process on a free loopback port, and fake MP servers serving /l2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from litestar import Litestar, Request, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, JSONBody  # noqa: TC002 - Litestar resolves them at runtime

from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[3]
LAUNCH = (
    "import json, sys\n"
    "from lmcache.app.config import CoordinatorConfig\n"
    "from lmcache.app.coordinator_main import run_coordinator\n"
    "from lmcache.app.logging_setup import configure_logging\n"
    "configure_logging('INFO')\n"
    "sys.exit(run_coordinator(CoordinatorConfig.model_validate(json.loads(sys.argv[1]))))\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@dataclass
class CoordinatorProcess:
    """One `run_coordinator` process; stopped by PID with SIGTERM."""

    port: int
    settings: dict[str, Any]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CoordinatorProcess:
        config = {"host": "127.0.0.1", "port": self.port, **self.settings}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, json.dumps(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"coordinator exited with {self.proc.returncode}: {self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=20)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(15)
        finally:
            self.proc = None

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=5)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Callable[..., CoordinatorProcess]]:
    started: list[CoordinatorProcess] = []

    def make(port: int | None = None, **settings: Any) -> CoordinatorProcess:
        settings.setdefault("enable_startup_resync", False)
        proc = CoordinatorProcess(port or free_port(), settings, tmp_path / f"coordinator-{len(started)}.log")
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        if proc.proc is not None:
            proc.stop(signal.SIGKILL)


def encode(key: ObjectKey) -> dict[str, Any]:
    return {
        "chunk_hash_hex": key.chunk_hash.hex(),
        "model_name": key.model_name,
        "kv_rank": key.kv_rank,
        "object_group_id": key.object_group_id,
        "cache_salt": key.cache_salt,
    }


def decode(body: dict[str, Any]) -> ObjectKey:
    return ObjectKey(
        bytes.fromhex(body["chunk_hash_hex"]),
        body["model_name"],
        body["kv_rank"],
        body.get("object_group_id", 0),
        body.get("cache_salt", ""),
    )


@dataclass
class FakeL2Server:
    """A tiny MP-server stand-in: DELETE /l2, GET /l2/keys and the prefetch calls over one dict."""

    objects: dict[ObjectKey, int] = field(default_factory=dict)
    fail_deletes: int = 0
    delete_calls: list[int] = field(default_factory=list)
    prefetches: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Litestar:
        @delete("/l2", status_code=200)
        async def delete_l2(request: Request[Any, Any, Any]) -> dict[str, int]:
            body = await request.json()
            self.delete_calls.append(len(body["keys"]))
            if self.fail_deletes > 0:
                self.fail_deletes -= 1
                raise HTTPException(status_code=503, detail="injected failure")
            deleted = sum(self.objects.pop(decode(k), None) is not None for k in body["keys"])
            return {"deleted": deleted}

        @get("/l2/keys")
        async def list_keys(
            page_size: FromQuery[int] = 1000, page_token: FromQuery[str | None] = None
        ) -> dict[str, Any]:
            ordered = sorted(self.objects.items())
            start = int(page_token or 0)
            page = ordered[start : start + page_size]
            nxt = start + page_size
            return {
                "keys": [{"key": encode(k), "bytes": n} for k, n in page],
                "next_page_token": str(nxt) if nxt < len(ordered) else None,
            }

        @post("/l2/prefetch", status_code=200)
        async def prefetch(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
            self.prefetches[data["request_id"]] = data
            return {"request_id": data["request_id"], "status": "submitted"}

        @get("/l2/prefetch/{request_id:str}")
        async def prefetch_status(request_id: FromPath[str]) -> dict[str, Any]:
            data = self.prefetches[request_id]
            return {"status": "completed", "found_keys": 2, "total_keys": len(data["token_ids"]) // 4}

        return Litestar([delete_l2, list_keys, prefetch, prefetch_status], openapi_config=None)

    def start(self) -> FakeL2Server:
        self.port = free_port()
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)


@pytest.fixture
def fake_server() -> Iterator[Callable[[], FakeL2Server]]:
    servers: list[FakeL2Server] = []

    def make() -> FakeL2Server:
        server = FakeL2Server().start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def make_key(n: int, salt: str = "") -> ObjectKey:
    return ObjectKey(n.to_bytes(8, "big"), "model-a", 0x01000100, 0, salt)
