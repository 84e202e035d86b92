"""The transfer modes (`--supported-transfer-mode`) and which ops each serves: declared once, here.

`lmcache_driven`: the server copies between the engine's registered KV and L1 (store/retrieve).
`engine_driven`: the engine copies through the SHM pool or the message (prepare/commit ops).
`auto`: both. The connector's own mode names are the same strings.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ("TRANSFER_MODES", "TransferMode", "serves_engine_driven", "serves_lmcache_driven")

TransferMode = Literal["lmcache_driven", "engine_driven", "auto"]
TRANSFER_MODES: tuple[TransferMode, ...] = get_args(TransferMode)


def serves_lmcache_driven(mode: str) -> bool:
    """Whether a server in `mode` serves the lmcache-driven ops (register_kv_cache, store, retrieve)."""
    return mode in ("lmcache_driven", "auto")


def serves_engine_driven(mode: str) -> bool:
    """Whether a server in `mode` serves the engine-driven ops (and so wants an SHM pool)."""
    return mode in ("engine_driven", "auto")
