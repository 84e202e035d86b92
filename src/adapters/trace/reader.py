"""Reading `.lct` traces: one file or a rotated series, frame by frame, with offsets in every error.

Files are memory-mapped and walked frame by frame. A frame that is cut short (a server killed while
writing) or whose length or msgpack is not valid raises `TraceError` naming the file and the byte offset
of the frame; with `allow_truncated`, a cut-short *last* frame ends the file with a warning instead (the
complete frames before it are still read). Corruption elsewhere is always an error.
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from lmcache.adapters.trace.format import (
    FORMAT_VERSION,
    LEN,
    MAGIC,
    MAX_FRAME_BYTES,
    TRACE_SCHEMA_VERSION,
    Header,
    Record,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ("TraceError", "TraceFile", "open_series", "series_paths")

_HEADER = msgspec.msgpack.Decoder(Header)
_RECORD = msgspec.msgpack.Decoder(Record)


class TraceError(Exception):
    """A trace that cannot be read; the message names the file and, where there is one, the offset."""

    def __init__(self, path: Path | str, message: str, offset: int | None = None) -> None:
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}: {message}{where}")
        self.path = str(path)
        self.offset = offset


@dataclass
class TraceFile:
    """One open trace file: its header, and where its records start."""

    path: Path
    header: Header
    data: mmap.mmap
    start: int
    warnings: list[str] = field(default_factory=list)

    @property
    def part(self) -> int:
        """Its rotation part (0 for files of producers that do not rotate)."""
        part = self.header.level_meta.get("part", 0)
        return part if isinstance(part, int) else 0

    @property
    def series(self) -> str:
        """The rotation series it belongs to ("" when unknown)."""
        return str(self.header.level_meta.get("series", ""))

    def close(self) -> None:
        """Unmap the file (left to the GC while decoded arguments still point into it)."""
        with contextlib.suppress(BufferError):
            self.data.close()

    def frames(self, allow_truncated: bool = False) -> Iterator[tuple[int, memoryview]]:
        """Every record frame as (offset, body)."""
        view = memoryview(self.data)
        size = len(view)
        offset = self.start
        unpack = LEN.unpack_from
        try:
            while offset < size:
                if offset + 4 > size:
                    self._truncated(
                        offset, f"truncated frame: {size - offset} of 4 length bytes", allow_truncated
                    )
                    return
                (length,) = unpack(view, offset)
                end = offset + 4 + length
                if length > MAX_FRAME_BYTES:
                    raise TraceError(self.path, f"corrupt frame: length {length} is not plausible", offset)
                if end > size:
                    message = f"truncated frame: {size - offset - 4} of {length} bytes"
                    self._truncated(offset, message, allow_truncated)
                    return
                yield offset, view[offset + 4 : end]
                offset = end
        finally:
            view.release()

    def records(self, allow_truncated: bool = False) -> Iterator[tuple[int, Record]]:
        """Every record, decoded up to its (still encoded) arguments, as (offset, record)."""
        for offset, body in self.frames(allow_truncated):
            try:
                yield offset, _RECORD.decode(body)
            except msgspec.DecodeError as exc:
                raise TraceError(self.path, f"corrupt record frame ({exc})", offset) from None

    def _truncated(self, offset: int, message: str, allowed: bool) -> None:
        if not allowed:
            raise TraceError(self.path, message, offset)
        self.warnings.append(f"{self.path}: {message} at byte offset {offset}; the rest is ignored")


def _open(path: Path) -> TraceFile:
    try:
        with path.open("rb") as handle:
            if path.stat().st_size == 0:
                raise TraceError(path, "empty file (no header)")
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise TraceError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        if len(data) < 4:
            raise TraceError(path, "truncated header frame", 0)
        (length,) = LEN.unpack_from(data, 0)
        if length > MAX_FRAME_BYTES or 4 + length > len(data):
            raise TraceError(path, f"not an lmcache trace, or truncated header (frame length {length})", 0)
        try:
            header = _HEADER.decode(data[4 : 4 + length])
        except msgspec.DecodeError as exc:
            raise TraceError(path, f"not an lmcache trace: bad header frame ({exc})", 0) from None
        if header.magic != MAGIC:
            raise TraceError(path, f"not an lmcache trace: magic {header.magic!r}, expected {MAGIC!r}", 0)
        if header.format_version != FORMAT_VERSION:
            raise TraceError(
                path, f"unsupported format_version {header.format_version} (want {FORMAT_VERSION})", 0
            )
        if header.trace_schema_version != TRACE_SCHEMA_VERSION:
            version = header.trace_schema_version
            raise TraceError(
                path, f"unsupported trace_schema_version {version} (want {TRACE_SCHEMA_VERSION})", 0
            )
    except BaseException:
        data.close()
        raise
    return TraceFile(path, header, data, 4 + length)


def open_series(paths: Sequence[Path | str]) -> list[TraceFile]:
    """Open trace files and order them as one stream (a rotated series by part number).

    Raises:
        TraceError: A file is unreadable, not a trace, or of another level or series than the first.
    """
    files: list[TraceFile] = []
    try:
        for p in paths:
            files.append(_open(Path(p)))
        if not files:
            raise TraceError("-", "no trace file given")
        files.sort(key=lambda f: (f.part, str(f.path)))
        first = files[0]
        for f in files[1:]:
            if f.header.level != first.header.level:
                raise TraceError(f.path, f"level {f.header.level!r} differs from {first.path}'s")
            if f.series != first.series or f.part == first.part:
                raise TraceError(f.path, f"not a later part of the same trace as {first.path}")
    except BaseException:
        for f in files:
            f.close()
        raise
    return files


def series_paths(path: Path) -> list[Path]:
    """`path` and the later parts of its rotated series that exist beside it (`<stem>.1<suffix>`, ...)."""
    suffix = path.suffix
    stem = path.name[: len(path.name) - len(suffix)]
    parts = [path]
    while (nxt := path.with_name(f"{stem}.{len(parts)}{suffix}")).exists():
        parts.append(nxt)
    return parts
