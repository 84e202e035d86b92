"""Logging inside the vLLM process: `lmcache.*` records in the `LMCache INFO: ...` form the user docs show.

The server's CLI configures its own logging; in vLLM's processes nobody does, so the connector installs one
stderr handler on the `lmcache` logger (once), at the level of `LMCACHE_LOG_LEVEL` (default INFO).
"""

from __future__ import annotations

import logging
import os

from lmcache.adapters.telemetry.stderr_log import install_stderr_handler

__all__ = ("init_logger",)

_LEVELS = frozenset(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


def init_logger(name: str) -> logging.Logger:
    """The logger `name` (put under `lmcache.` when it is not already), with the `lmcache` handler set up."""
    if install_stderr_handler():
        level = os.environ.get("LMCACHE_LOG_LEVEL", "INFO").upper()
        logging.getLogger("lmcache").setLevel(level if level in _LEVELS else "INFO")
    return logging.getLogger(name if name == "lmcache" or name.startswith("lmcache.") else f"lmcache.{name}")
