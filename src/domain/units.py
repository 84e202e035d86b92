"""Size units: the spec's "GB" flags are binary (1 GB L1 = 1073741824 bytes, wire-protocol.md §5.11)."""

from __future__ import annotations

GIB = 1024**3


def gb_to_bytes(gb: float) -> int:
    """Convert a `*_gb` flag value to bytes (GiB, rounded down)."""
    if gb < 0:
        raise ValueError(f"size must be >= 0 GB, got {gb}")
    return int(gb * GIB)


def bytes_to_gb(nbytes: int) -> float:
    """Convert bytes to the GB unit the HTTP API reports."""
    return nbytes / GIB
