"""`lmcache coordinator` in the foreground: build the container, serve the app with uvicorn, stop cleanly.

SIGTERM and SIGINT (Ctrl-C) ask uvicorn to shut down gracefully: open requests finish, the app's shutdown
hook stops the loops and writes the final checkpoint, and `run_coordinator` returns 0. A second SIGINT
forces the exit. Unlike uvicorn's default, the signal is not re-raised after the shutdown, so the exit
status is ours. A port that cannot be bound, or a checkpoint that cannot be read, returns 1.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import TYPE_CHECKING, cast

import uvicorn

from lmcache.app.coordinator_container import CoordinatorContainer

if TYPE_CHECKING:
    from collections.abc import Generator
    from socket import socket
    from types import FrameType

    from lmcache.adapters.coordinator.service import CoordinatorService
    from lmcache.app.config import CoordinatorConfig

__all__ = ("EXIT_FAILURE", "EXIT_OK", "run_coordinator")

EXIT_OK = 0
EXIT_FAILURE = 1

logger = logging.getLogger(__name__)


class _CoordinatorServer(uvicorn.Server):
    """uvicorn.Server that logs a ready line and keeps the exit status after a signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            logger.info("Received %s; shutting down", signal.Signals(sig).name)
            self.should_exit = True

    async def startup(self, sockets: list[socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.config.host, self.config.port
            logger.info("lmcache coordinator ready on http://%s:%d", host, port)


def build_server(config: CoordinatorConfig, container: CoordinatorContainer) -> uvicorn.Server:
    """The uvicorn server for a built container (not started)."""
    uv_config = uvicorn.Config(
        container.app(),
        host=config.host,
        port=config.port,
        # uvicorn annotates int but only uses it as a loop.call_later delay, so fractions work
        timeout_keep_alive=cast("int", config.timeout_keep_alive),
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    return _CoordinatorServer(uv_config)


def run_coordinator(config: CoordinatorConfig) -> int:
    """Serve the coordinator until SIGTERM/SIGINT; returns the process exit status.

    Args:
        config: The validated coordinator configuration.

    Returns:
        0 after a graceful shutdown, 1 when the start failed (unreadable checkpoint, port in use).
    """
    container = CoordinatorContainer(config=config)
    runtime: CoordinatorService = container.runtime()
    try:
        runtime.load_checkpoint()
    except (OSError, ValueError) as exc:
        logger.error("Cannot load checkpoint %s: %s", config.checkpoint_path, exc)
        return EXIT_FAILURE
    server = build_server(config, container)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits on a bind or lifespan start-up failure
        logger.error("lmcache coordinator failed to start (exit status %s)", exc.code)
        return EXIT_FAILURE
    if not server.started:
        return EXIT_FAILURE
    logger.info("lmcache coordinator stopped")
    return EXIT_OK
