"""The coordinator's checkpoint file: JSON, replaced atomically (temp file, fsync, rename, fsync dir).

A reader never sees a half-written checkpoint: the new content is complete and on disk before `rename`
swaps it in, and the directory is synced so the rename itself survives a crash.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("JsonCheckpointFile",)

logger = logging.getLogger(__name__)


class JsonCheckpointFile:
    """One checkpoint file.

    Args:
        path: Where the checkpoint lives; its directory is created on the first save.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, data: dict[str, Any]) -> None:
        """Write `data` atomically (blocking: run it off the event loop).

        Raises:
            OSError: When the directory or file cannot be written; the previous checkpoint is kept.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(data, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> dict[str, Any] | None:
        """The saved data, or None when there is no checkpoint yet.

        Raises:
            ValueError: When the file is not a JSON object (a corrupt checkpoint is never silently dropped).
            OSError: When it exists but cannot be read.
        """
        if not self.path.exists():
            return None
        with self.path.open(encoding="utf-8") as src:
            data = json.load(src)
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: not a coordinator checkpoint")
        return data
