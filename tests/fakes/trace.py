"""RecordingTraceSink: keeps every traced call for assertions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lmcache.ports.trace import TraceSink


class RecordingTraceSink:
    """Records (short call name, args) in order; `names` lists the short names."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def record(self, qualname: str, args: Mapping[str, object]) -> None:
        self.calls.append((qualname.rsplit(".", 1)[-1], dict(args)))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


_check: TraceSink = RecordingTraceSink()
