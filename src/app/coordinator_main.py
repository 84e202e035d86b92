"""`lmcache coordinator` in the foreground: build the container, serve the app with uvicorn, stop cleanly.

SIGTERM and SIGINT (Ctrl-C) ask uvicorn to shut down gracefully: open requests finish, the app's shutdown
hook stops the loops and writes the final checkpoint, and `run_coordinator` returns 0. A second SIGINT
forces the exit. Unlike uvicorn's default, the signal is not re-raised after the shutdown, so the exit
status is ours (`coordinator_server.py`). A port that cannot be bound, or a checkpoint that cannot be
read, returns 1. The container builds everything; this module reads its one `graph`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lmcache.app.coordinator_container import CoordinatorContainer

if TYPE_CHECKING:
    from lmcache.app.config import CoordinatorConfig

__all__ = ("EXIT_FAILURE", "EXIT_OK", "run_coordinator")

EXIT_OK = 0
EXIT_FAILURE = 1

logger = logging.getLogger(__name__)


def run_coordinator(config: CoordinatorConfig) -> int:
    """Serve the coordinator until SIGTERM/SIGINT; returns the process exit status.

    Args:
        config: The validated coordinator configuration.

    Returns:
        0 after a graceful shutdown, 1 when the start failed (unreadable checkpoint, port in use).
    """
    graph = CoordinatorContainer(config=config).graph()
    runtime, server = graph.runtime, graph.server
    try:
        runtime.load_checkpoint()
    except (OSError, ValueError) as exc:
        logger.error("Cannot load checkpoint %s: %s", config.checkpoint_path, exc)
        return EXIT_FAILURE
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits on a bind or lifespan start-up failure
        logger.error("lmcache coordinator failed to start (exit status %s)", exc.code)
        return EXIT_FAILURE
    if not server.started:
        return EXIT_FAILURE
    logger.info("lmcache coordinator stopped")
    return EXIT_OK
