"""TraceSink port: where the traced storage engine hands each call it makes (--trace-level storage)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping


class TraceSink(Protocol):
    """Receives one record per storage-engine call, in the order the calls took effect.

    Threading: `record` is called from any thread, often while the L1 manager holds its lock; it must be
    quick and never block (a bounded queue that drops and counts when full) and never call back into the
    domain.

    Ownership: the sink may keep `args`; callers hand over values they no longer mutate (lists are fresh
    copies, keys are immutable tuples).

    Failure: `record` never raises; a full queue or a failing disk is the sink's problem, counted there.
    """

    def record(self, qualname: str, args: Mapping[str, object]) -> None:
        """Hand one call over (its qualified name and its arguments by parameter name); returns at once."""
        ...
