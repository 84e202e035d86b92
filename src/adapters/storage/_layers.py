"""Walking an L2 adapter's wrapper chain (resilience, eviction, serde, fault injection) by `inner`."""

from __future__ import annotations

from typing import Any

__all__ = ("find_layer",)


def find_layer(adapter: object, method: str) -> Any | None:
    """The first layer down an adapter's wrapper chain (`inner`) whose class defines `method`, or None.

    The class, not the object: the resilience wrapper forwards unknown attributes to what it wraps.
    """
    seen: set[int] = set()
    layer: object | None = adapter
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if callable(getattr(type(layer), method, None)):
            return layer
        layer = getattr(layer, "inner", None)
    return None
