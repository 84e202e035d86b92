"""The coordinator's uvicorn server and what `run_coordinator` receives from the container.

`CoordinatorServer` departs from uvicorn's default in two ways: it logs a ready line, and it does not
re-raise SIGTERM/SIGINT after the graceful shutdown, so the exit status is ours (a second SIGINT forces
the exit). `CoordinatorGraph` is the container's one answer to the entry point: the service (whose
checkpoint is loaded before serving) and the server over its app.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Generator
    from socket import socket
    from types import FrameType

    from lmcache.adapters.coordinator.service import CoordinatorService

__all__ = ("CoordinatorGraph", "CoordinatorServer")

logger = logging.getLogger(__name__)


class CoordinatorServer(uvicorn.Server):
    """uvicorn.Server that logs a ready line and keeps the exit status after a signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT/SIGTERM ourselves (main thread only), restoring the old handlers after."""
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
        """Start as uvicorn does, then log the ready line."""
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.config.host, self.config.port
            logger.info("lmcache coordinator ready on http://%s:%d", host, port)


@dataclass(frozen=True, slots=True)
class CoordinatorGraph:
    """The running coordinator's parts (module docstring)."""

    runtime: CoordinatorService
    server: CoordinatorServer
