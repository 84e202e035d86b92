"""A coordinator that accepts connections but never answers must not slow or hang `lmcache server`.

The stand-in accepts every connection and holds it open without reading or replying, so each call of
the server's coordinator client waits for its own timeout (2 s). Meanwhile the server answers ZMQ and HTTP
requests at once, and SIGTERM still ends it within the client's bounded stop (3 s) plus its own shutdown.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.integration.coordinator.conftest import wait_until
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from collections.abc import Iterator

PROMPT_S = 1.0  # a reply slower than this would mean the server waited on the coordinator
STOP_BOUND_S = 10.0  # client request timeout (2 s) + fleet stop bound (3 s) + the server's own shutdown


class SilentCoordinator:
    """Accepts TCP connections and keeps them open, never reading or answering."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read: the request hangs until the client gives up

    def start(self) -> SilentCoordinator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in [*self.accepted, self.listener]:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def silent() -> Iterator[SilentCoordinator]:
    coordinator = SilentCoordinator().start()
    yield coordinator
    coordinator.close()


def test_a_coordinator_that_never_answers_neither_slows_nor_hangs_the_server(
    silent: SilentCoordinator,
) -> None:
    flags = (
        "--coordinator-url",
        silent.url,
        "--coordinator-advertise-ip",
        "127.0.0.1",
        "--coordinator-heartbeat-interval",
        "0.1",
        "--coordinator-l2-event-reporting",
        "--coordinator-l2-event-flush-interval",
        "0.1",
    )
    with run_server(*flags) as server, server.client() as client:
        wait_until(lambda: silent.accepted, timeout=10)  # the registration is hanging on the silent socket
        for _ in range(5):
            began = time.monotonic()
            assert client.ping() is True
            health = httpx.get(f"{server.http_url}/healthcheck", timeout=5)
            assert health.status_code == 200, health.text
            assert time.monotonic() - began < PROMPT_S
            time.sleep(0.2)
        # The registration timed out (2 s) and the client retries, still without blocking the server.
        server.wait_for_log(rf"Coordinator {silent.url} unreachable", timeout_s=10)
        began = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - began < PROMPT_S
        began = time.monotonic()
        assert server.stop() == 0, server.log()  # run_server checks the exit status again
        assert time.monotonic() - began < STOP_BOUND_S
