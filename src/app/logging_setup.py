"""Logging set-up; only the CLI calls it, every module just uses `logging.getLogger(__name__)`."""

from __future__ import annotations

import logging

from lmcache.adapters.telemetry.stderr_log import install_stderr_handler

__all__ = ("configure_logging",)


def configure_logging(level: str) -> None:
    """Send `lmcache.*` records to stderr in the format the user docs show, at `level`."""
    install_stderr_handler()
    root = logging.getLogger("lmcache")
    root.setLevel(level)
    root.propagate = False
