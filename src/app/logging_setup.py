"""Logging set-up; only the CLI calls it, every module just uses `logging.getLogger(__name__)`."""

from __future__ import annotations

import logging

__all__ = ("configure_logging",)

_FORMAT = "LMCache %(levelname)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send `lmcache.*` records to stderr in the format the user docs show, at `level`."""
    root = logging.getLogger("lmcache")
    if not any(getattr(h, "_lmcache", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._lmcache = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
