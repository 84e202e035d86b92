"""Logging inside the vLLM process: `lmcache.*` records in the `LMCache INFO: ...` form the user docs show.

The server's CLI configures its own logging; in vLLM's processes nobody does, so the connector installs one
stderr handler on the `lmcache` logger (once), at the level of `LMCACHE_LOG_LEVEL` (default INFO).
"""

from __future__ import annotations

import logging
import os

__all__ = ("init_logger",)

_FORMAT = "LMCache %(levelname)s: %(message)s"
_LEVELS = frozenset(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


def init_logger(name: str) -> logging.Logger:
    """The logger `name` (put under `lmcache.` when it is not already), with the `lmcache` handler set up."""
    root = logging.getLogger("lmcache")
    if not any(getattr(h, "_lmcache", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._lmcache = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        level = os.environ.get("LMCACHE_LOG_LEVEL", "INFO").upper()
        root.setLevel(level if level in _LEVELS else "INFO")
        root.propagate = False
    return logging.getLogger(name if name == "lmcache" or name.startswith("lmcache.") else f"lmcache.{name}")
