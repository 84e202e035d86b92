"""Hands the L1 arena to L2 adapters whose native clients transfer from registered memory (Mooncake, NIXL).

An adapter that has `register_l1(address, size)` gets the arena once at start-up, so its loads and stores
of L1 extents move copy-free without registering memory per call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("attach_l1_memory",)

logger = logging.getLogger(__name__)


def attach_l1_memory(adapters: Iterable[Any], memory: Any) -> None:
    """Call `register_l1` of every adapter that has one with the L1 arena's address and size."""
    address = getattr(memory, "address", None)
    if address is None:
        return
    size = int(memory.size_bytes)
    for adapter in adapters:
        hook = getattr(adapter, "register_l1", None)
        if callable(hook):
            hook(address, size)
            logger.info("L2 adapter %s: registered the L1 arena (%d bytes)", type(adapter).__name__, size)
