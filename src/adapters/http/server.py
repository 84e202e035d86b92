"""uvicorn on its own thread and event loop, so the HTTP frontend answers while the data path is busy.

The listening socket is bound here, before the thread starts, so a port in use is a plain `OSError` at
start-up (uvicorn would log and `sys.exit` inside its thread). `stop` asks uvicorn to finish open requests
and joins the thread. With a certificate and key it serves HTTPS (uvicorn's TLS). uvicorn's limit on an
incomplete request head is raised to 1 MiB so an over-long query string gets the gate's 414 (gate.py)
instead of a reset connection.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from lmcache.adapters.http.gate import MAX_HEAD_BYTES

if TYPE_CHECKING:
    from typing import Any

__all__ = ("HttpServer", "HttpStartError")

logger = logging.getLogger("lmcache.http")


class HttpStartError(RuntimeError):
    """The frontend could not start (its thread died or did not come up in time)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); raises OSError when it cannot be bound."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves an ASGI app with uvicorn on a daemon thread.

    Args:
        app: The ASGI app.
        host: `--http-host`.
        port: `--http-port`.
        ssl_certfile: `--http-ssl-certfile` (HTTPS when set, with `ssl_keyfile`).
        ssl_keyfile: `--http-ssl-keyfile`.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.scheme = "https" if ssl_certfile else "http"
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
            http="h11",
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The frontend's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Bind, start the thread and wait until uvicorn serves.

        Raises:
            OSError: The address cannot be bound (port in use, unknown host).
            HttpStartError: uvicorn did not come up.
        """
        self._socket = bind_socket(self.host, self.port)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="lmcache-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HttpStartError(f"the HTTP frontend on {self.url} did not start")
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish open requests, stop serving and join the thread; idempotent."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout_s)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
