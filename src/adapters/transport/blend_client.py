"""Typed client calls of the CacheBlend ops (cacheblend.md §2) over an `LMCacheClient`.

Used by our tests and benchmarks the way a vLLM blend connector drives a server: handshake, rope
registration, `cb_unified_lookup` polled until it is not None, `cb_retrieve_pre_computed`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from lmcache.adapters.transport.blend_wire import CBMatchResult, CBUnifiedLookupResult
from lmcache.adapters.transport.wire_types import encode_descriptor

if TYPE_CHECKING:
    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.transport.wire_types import CacheKey, Descriptor

__all__ = ("BlendClient",)


class BlendClient:
    """The cb_* calls of one client.

    Args:
        client: The transport client (its socket, timeouts and uids).
    """

    def __init__(self, client: LMCacheClient) -> None:
        self.client = client

    def cb_protocol_handshake(self, client_version: int = 1) -> tuple[int, bool]:
        """Op 33."""
        reply = self.client.call("cb_protocol_handshake", client_version)
        return (int(reply[0]), bool(reply[1]))

    def cb_register_rope(
        self,
        instance_id: int,
        caches: list[Descriptor],
        head_size: int,
        is_neox_style: bool = True,
        group_to_cache: list[int] | None = None,
        group_rot: list[list[int]] | None = None,
        group_head_size: list[int] | None = None,
        kv_quant: str = "",
    ) -> None:
        """Op 25, all 8 frames as the 0.5.6 client sends them."""
        self.client.call(
            "cb_register_rope",
            instance_id,
            [encode_descriptor(d) for d in caches],
            head_size,
            is_neox_style,
            group_to_cache or [],
            group_rot or [],
            group_head_size or [],
            kv_quant,
        )

    def cb_unregister_rope(self, instance_id: int) -> None:
        """Op 26."""
        self.client.call("cb_unregister_rope", instance_id)

    def cb_unified_lookup_once(self, key: CacheKey, tp_size: int = 1) -> CBUnifiedLookupResult | None:
        """Op 28, one call (None: still loading)."""
        reply = self.client.call("cb_unified_lookup", key, tp_size)
        return None if reply is None else msgspec.convert(reply, CBUnifiedLookupResult)

    def cb_unified_lookup(
        self, key: CacheKey, tp_size: int = 1, poll_s: float = 0.005, timeout_s: float = 10.0
    ) -> tuple[CBUnifiedLookupResult, int]:
        """Op 28 re-sent until the reply is not None; returns it and the number of calls."""
        deadline = time.monotonic() + timeout_s
        calls = 0
        while True:
            calls += 1
            result = self.cb_unified_lookup_once(key, tp_size)
            if result is not None:
                return result, calls
            if time.monotonic() > deadline:
                raise TimeoutError(f"cb_unified_lookup of {key.request_id} still loading after {calls} calls")
            time.sleep(poll_s)

    def cb_retrieve_pre_computed(
        self,
        key: CacheKey,
        matches: list[CBMatchResult],
        block_ids: list[list[int]],
        instance_id: int,
        event: bytes = b"stub_ipc_handle",
    ) -> tuple[bytes, bool]:
        """Op 27."""
        reply = self.client.call("cb_retrieve_pre_computed", key, matches, block_ids, instance_id, event)
        return (bytes(reply[0]), bool(reply[1]))

    def cb_reorder_plan(self, key: CacheKey, keep_prefix: int = 0, budget_ms: int = 0) -> list[int]:
        """The named op `cb_reorder_plan`."""
        return list(self.client.call("cb_reorder_plan", key, keep_prefix, budget_ms))
