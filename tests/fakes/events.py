"""RecordingEventSink: keeps every storage event for assertions."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from lmcache.domain.events import StorageEvent
    from lmcache.ports.events import EventSink

E = TypeVar("E")


class RecordingEventSink:
    """Records events in order; `of_type` filters them."""

    def __init__(self) -> None:
        self.events: list[StorageEvent] = []

    def publish(self, event: StorageEvent) -> None:
        self.events.append(event)

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


_check: EventSink = RecordingEventSink()
