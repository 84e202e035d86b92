"""The storage-trace recorder: a `TraceSink` that writes `.lct` files off the request path.

`record` appends a tuple to a bounded deque (no lock, no encoding, no I/O); when the deque is full the
record is dropped and counted, so a request never waits for the disk. A writer thread wakes every
`flush_interval_s` (or when the queue is half full), encodes what is queued into one buffer, writes it
and flushes it to the OS, so a reader sees a record within about that interval. When drops happened, a
`lmcache.trace.dropped` record with their count is written where they happened, so `lmcache trace`
tools can say the trace is incomplete there.

Files rotate by size: once a file passes `rotate_bytes`, the writer starts `<stem>.1<suffix>`,
`<stem>.2<suffix>`, ...; each part opens with its own header (same start times, `level_meta.part` = its
number, same `level_meta.series`). Files are created exclusively with mode 0600 (a trace holds the
chunk hashes of every tenant), never overwriting an existing file. A write error (disk full) is logged
once; the writer then keeps draining and counting the records as dropped, so memory stays bounded.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from lmcache.adapters.trace.format import (
    FORMAT_VERSION,
    LEN,
    MAGIC,
    TRACE_SCHEMA_VERSION,
    Header,
    KeyCodec,
    RecordOut,
    config_digest,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import BinaryIO

__all__ = ("DROPPED_QUALNAME", "LctTraceRecorder", "part_path")

logger = logging.getLogger(__name__)
DROPPED_QUALNAME = "lmcache.trace.dropped"


def part_path(base: Path, part: int) -> Path:
    """The file of rotation part `part` (0 is `base` itself)."""
    if part == 0:
        return base
    suffix = base.suffix
    return base.with_name(f"{base.name[: len(base.name) - len(suffix)]}.{part}{suffix}")


class LctTraceRecorder:
    """Records storage-engine calls into `.lct` files.

    Args:
        path: The first file (later parts are named after it, see `part_path`).
        config_json: The storage configuration as JSON (header `sm_config_json`).
        level_meta: Extra header metadata (producer, chunk size, ...); `series` and `part` are added.
        level: The header's trace level.
        queue_size: Records queued at most before new ones are dropped.
        rotate_bytes: Size after which the next part is started.
        flush_interval_s: How often the writer drains the queue.
        monotonic: Clock of the records' `t_mono` (tests pass a fake).
        wall: Clock of the records' `t_wall`.
    """

    def __init__(
        self,
        path: Path,
        *,
        config_json: str,
        level_meta: Mapping[str, Any] | None = None,
        level: str = "storage",
        queue_size: int = 1 << 16,
        rotate_bytes: int = 1 << 30,
        flush_interval_s: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or rotate_bytes < 1 or flush_interval_s <= 0:
            raise ValueError("trace queue size, rotation size and flush interval must be positive")
        self.base = path
        self._config_json = config_json
        self._meta = {**(level_meta or {}), "series": uuid.uuid4().hex}
        self._level = level
        self._cap = queue_size
        self._rotate = rotate_bytes
        self._interval = flush_interval_s
        self._mono = monotonic
        self._wall = wall
        self._queue: collections.deque[tuple[str, float, float, Mapping[str, object]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: BinaryIO | None = None
        self._codec = KeyCodec()
        self._enc = msgspec.msgpack.Encoder()
        self._t0 = monotonic()
        self._w0 = wall()
        self._part = 0
        self.files: list[Path] = []
        self.records = 0
        self.bytes = 0
        self._file_bytes = 0
        self._dropped = 0  # counted on the producers' side (racy += is fine: an estimate under load)
        self._dropped_written = 0
        self.error: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ producer side
    def record(self, qualname: str, args: Mapping[str, object]) -> None:
        """Queue one call; drops it (counted) when the queue is full or the recorder is closed."""
        queue = self._queue
        if self._closed or len(queue) >= self._cap:
            self._dropped += 1
            return
        queue.append((qualname, self._mono(), self._wall(), args))
        if len(queue) == self._cap >> 1:
            self._wake.set()

    @property
    def dropped(self) -> int:
        """Records dropped so far (queue full, encoding or write failures, after close)."""
        return self._dropped

    def status(self) -> dict[str, Any]:
        """What `/status` reports under `trace`."""
        return {
            "level": self._level,
            "path": str(self.files[-1]) if self.files else str(self.base),
            "files": [str(p) for p in self.files],
            "records": self.records,
            "dropped": self._dropped,
            "queued": len(self._queue),
            "bytes": self.bytes,
            "error": self.error,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the first file (exclusively), write its header and start the writer thread.

        Raises:
            OSError: The file exists or cannot be created.
        """
        self._open_part()
        self._thread = threading.Thread(target=self._run, name="lmcache-trace-writer", daemon=True)
        self._thread.start()
        logger.info("Recording storage trace to %s", self.base)

    def close(self) -> None:
        """Stop accepting records, write what is queued, fsync and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        self._drain()
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self._fail(exc)
            self._file.close()
            self._file = None
        level = logging.WARNING if self._dropped else logging.INFO
        logger.log(
            level,
            "Storage trace closed: %d records in %s (%d dropped)",
            self.records,
            ", ".join(map(str, self.files)) or self.base,
            self._dropped,
        )

    # ------------------------------------------------------------------ writer side
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        buf = bytearray()
        queue, enc, value = self._queue, self._enc, self._codec.value
        t0 = self._t0
        written = 0
        while queue:
            qualname, mono, wall, args = queue.popleft()
            if self.error is not None:
                self._dropped += 1
                continue
            start = len(buf)
            buf += b"\0\0\0\0"
            try:
                encoded = {k: value(v) for k, v in args.items()}
                enc.encode_into(RecordOut(max(0.0, mono - t0), wall, qualname, encoded), buf, -1)
            except (TypeError, ValueError, OverflowError) as exc:
                del buf[start:]
                self._dropped += 1
                logger.warning("Trace record %s not encodable; dropped: %r", qualname, exc)
                continue
            LEN.pack_into(buf, start, len(buf) - start - 4)
            written += 1
            if len(buf) >= 1 << 20:
                self._write(buf, written)
                buf, written = bytearray(), 0
        self._mark_drops(buf)
        self._write(buf, written)

    def _mark_drops(self, buf: bytearray) -> None:
        """Append a `lmcache.trace.dropped` record when records were dropped since the last one."""
        missing = self._dropped - self._dropped_written
        if missing <= 0 or self.error is not None:
            return
        self._dropped_written = self._dropped
        start = len(buf)
        buf += b"\0\0\0\0"
        now = self._mono()
        self._enc.encode_into(
            RecordOut(max(0.0, now - self._t0), self._wall(), DROPPED_QUALNAME, {"count": missing}), buf, -1
        )
        LEN.pack_into(buf, start, len(buf) - start - 4)

    def _write(self, buf: bytearray, records: int) -> None:
        if not buf or self.error is not None or self._file is None:
            return
        try:
            if self._file_bytes >= self._rotate:  # rotate when there is something for the next part
                self._file.close()
                self._part += 1
                self._open_part()
            self._file.write(buf)
            self._file.flush()
        except OSError as exc:
            self._dropped += records
            self._fail(exc)
            return
        self.records += records
        self.bytes += len(buf)
        self._file_bytes += len(buf)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            logger.error("Storage trace cannot be written (%s); further records are dropped", exc)
        self.error = str(exc)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _open_part(self) -> None:
        path = part_path(self.base, self._part)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        header = Header(
            magic=MAGIC,
            format_version=FORMAT_VERSION,
            level=self._level,
            trace_schema_version=TRACE_SCHEMA_VERSION,
            t_mono_start=self._t0,
            t_wall_start=self._w0,
            sm_config_json=self._config_json,
            sm_config_digest=config_digest(self._config_json),
            level_meta={**self._meta, "part": self._part},
        )
        body = self._enc.encode(header)
        self._file.write(LEN.pack(len(body)) + body)
        self._file.flush()
        self._file_bytes = len(body) + 4
        self.bytes += self._file_bytes
        self.files.append(Path(path))
