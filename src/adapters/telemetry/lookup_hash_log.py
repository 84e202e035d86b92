"""The lookup-hash log (--lookup-hash-log-dir): one JSONL line per lookup, in rotating files.

Each line is `{"timestamp", "request_id", "model_name", "chunk_size", "seq_len", "chunk_hashes"}` with
the hashes as `0x`-prefixed hex, the record LMCache's cache simulator replays. Files are named
`lookup_hashes_<UTC yyyymmdd_HHMMSS>_<seq>.jsonl`; a new one starts when the current one is
`rotation_interval_s` old or the next line would take it past `rotation_max_size` bytes, and the oldest
are deleted beyond `max_files` (files left by an earlier run count too). It runs as an event-bus
subscriber, so the file I/O happens on the bus's drain thread, never on a request thread.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

from lmcache.domain.events import LookupPerformed

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from lmcache.domain.events import StorageEvent

__all__ = ("LookupHashLog",)

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^lookup_hashes_\d{8}_\d{6}_(\d+)\.jsonl$")


class LookupHashLog:
    """Writes `LookupPerformed` events to rotating JSONL files; used from one thread only.

    Args:
        directory: Where the files go (created when missing).
        rotation_interval_s: Age at which a file is closed and a new one started.
        rotation_max_size: Bytes a file may reach before a new one is started.
        max_files: Files kept; the oldest are deleted.
        clock: Wall-clock seconds, for file ages and names (tests pass a fake).
    """

    name = "lookup_hash_log"
    kinds: tuple[type, ...] = (LookupPerformed,)

    def __init__(
        self,
        directory: Path,
        rotation_interval_s: float,
        rotation_max_size: int,
        max_files: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rotation_interval_s <= 0 or rotation_max_size <= 0 or max_files < 1:
            raise ValueError("lookup-hash log rotation interval, size and file count must be positive")
        self.directory = directory
        self.rotation_interval_s = rotation_interval_s
        self.rotation_max_size = rotation_max_size
        self.max_files = max_files
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        existing = [p for p in directory.iterdir() if _seq_of(p) >= 0]
        existing.sort(key=lambda p: (p.stat().st_mtime, p.name))
        self.files: list[Path] = existing
        self._seq = 1 + max((_seq_of(p) for p in existing), default=-1)
        self._handle: IO[bytes] | None = None
        self._opened_at = 0.0
        self._size = 0

    @property
    def current(self) -> Path | None:
        """The file being written, if any."""
        return self.files[-1] if self._handle is not None else None

    def handle(self, event: StorageEvent, at: float) -> None:
        """Append one lookup's line, rotating first when due."""
        if not isinstance(event, LookupPerformed):
            return
        record = {
            "timestamp": at,
            "request_id": event.request_id,
            "model_name": event.model_name,
            "chunk_size": event.chunk_size,
            "seq_len": event.seq_len,
            "chunk_hashes": ["0x" + h.hex() for h in event.chunk_hashes],
        }
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        handle = self._writable(len(line))
        handle.write(line)
        handle.flush()
        self._size += len(line)

    def _writable(self, incoming: int) -> IO[bytes]:
        now = self._clock()
        handle = self._handle
        if handle is None:
            return self._rotate(now)
        if now - self._opened_at >= self.rotation_interval_s:
            return self._rotate(now)
        if self._size and self._size + incoming > self.rotation_max_size:
            return self._rotate(now)
        return handle

    def _rotate(self, now: float) -> IO[bytes]:
        self.close()
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d_%H%M%S")
        path = self.directory / f"lookup_hashes_{stamp}_{self._seq:06d}.jsonl"
        self._seq += 1
        handle = path.open("xb")
        self._handle, self._opened_at, self._size = handle, now, 0
        self.files.append(path)
        while len(self.files) > self.max_files:
            oldest = self.files.pop(0)
            try:
                oldest.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("Could not delete old lookup-hash log %s: %s", oldest, exc)
        return handle

    def close(self) -> None:
        """Close the current file (a later lookup starts a new one)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


def _seq_of(path: Path) -> int:
    """The sequence number in a log file's name; -1 for any other file."""
    match = _NAME.match(path.name)
    return int(match[1]) if match else -1
