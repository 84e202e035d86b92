"""The `LMCache INFO: message` stderr handler of the `lmcache` logger, installed once per process.

Two callers install it: the CLI (`app/logging_setup.py`) in the server's process and the vLLM connector
(`adapters/vllm/logs.py`) in vLLM's, where nobody else configures our logging.
"""

from __future__ import annotations

import logging

__all__ = ("FORMAT", "install_stderr_handler")

FORMAT = "LMCache %(levelname)s: %(message)s"


def install_stderr_handler() -> bool:
    """Add the handler to the `lmcache` logger unless it has one (records then stop there); whether added."""
    root = logging.getLogger("lmcache")
    if any(getattr(h, "_lmcache", False) for h in root.handlers):
        return False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._lmcache = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
    return True
