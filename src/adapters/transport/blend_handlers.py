"""The CacheBlend op handlers (cacheblend.md §2): added to the handler table with `--engine-type blend`.

`store` needs no handler of its own: the cache engine calls the blend registrar after each commit. The
blend server also wraps `end_session`, which releases the stashed sparse locks of the request. Every
error raises, so the transport answers the op's failure value (LMCache stays silent).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transport.blend_wire import from_domain, to_domain
from lmcache.adapters.transport.handlers import EVENT_HANDLE, request_key
from lmcache.adapters.transport.wire_types import decode_descriptor

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.adapters.transfer.rope_registration import CpuRopeRegistrar
    from lmcache.adapters.transport.blend_wire import CBMatchResult, CBUnifiedLookupResult
    from lmcache.adapters.transport.wire_types import CacheKey
    from lmcache.domain.blend_lookup import BlendLookupService
    from lmcache.domain.blend_retrieve import BlendRetriever

__all__ = ("PROTOCOL_VERSION", "BlendHandlers")

PROTOCOL_VERSION = 1
logger = logging.getLogger("lmcache.handlers")


class BlendHandlers:
    """The cb_* handlers and the blend `end_session`.

    Args:
        lookups: The `cb_unified_lookup` jobs.
        retriever: `cb_retrieve_pre_computed`.
        rope: `cb_register_rope` / `cb_unregister_rope`.
        end_session: The default `end_session` handler (wrapped).
    """

    def __init__(
        self,
        lookups: BlendLookupService,
        retriever: BlendRetriever,
        rope: CpuRopeRegistrar,
        end_session: Callable[[str], None],
    ) -> None:
        self.lookups = lookups
        self.retriever = retriever
        self.rope = rope
        self._end_session = end_session
        self.table: dict[str, Callable[..., Any]] = {
            "cb_protocol_handshake": self.cb_protocol_handshake,
            "cb_register_rope": self.cb_register_rope,
            "cb_unregister_rope": self.cb_unregister_rope,
            "cb_unified_lookup": self.cb_unified_lookup,
            "cb_retrieve_pre_computed": self.cb_retrieve_pre_computed,
            "cb_reorder_plan": self.cb_reorder_plan,
            "end_session": self.end_session,
        }

    def cb_protocol_handshake(self, client_version: int) -> tuple[int, bool]:
        """`(server version, compatible)`; no state changes."""
        return PROTOCOL_VERSION, client_version == PROTOCOL_VERSION

    def cb_register_rope(
        self,
        instance_id: int,
        caches: list[Any],
        head_size: int,
        is_neox_style: bool,
        group_to_cache: list[int],
        group_rot: list[list[int]],
        group_head_size: list[int],
        kv_quant: str,
    ) -> None:
        """Register (or replace) the instance's RoPE state; failures are logged loudly and answered None."""
        try:
            descriptors = [decode_descriptor(c) for c in caches]
            self.rope.register(
                instance_id,
                descriptors,
                head_size,
                is_neox_style,
                group_to_cache,
                group_rot,
                group_head_size,
                kv_quant,
            )
        except Exception as exc:
            logger.error("cb_register_rope of instance %d failed: %s", instance_id, exc)
            raise

    def cb_unregister_rope(self, instance_id: int) -> None:
        """Drop the instance's RoPE state (unknown ids are a no-op)."""
        self.rope.unregister(instance_id)

    def cb_unified_lookup(self, key: CacheKey, tp_size: int) -> CBUnifiedLookupResult | None:
        """Start or poll the request's lookup job; None while loading."""
        result = self.lookups.lookup(request_key(key))
        return None if result is None else from_domain(result)

    def cb_retrieve_pre_computed(
        self,
        key: CacheKey,
        matches: list[CBMatchResult],
        block_ids: list[list[int]],
        instance_id: int,
        event: bytes,
    ) -> tuple[bytes, bool]:
        """Scatter the matches into the request's blocks (the event is a CPU stub)."""
        outcome = self.retriever.retrieve(request_key(key), to_domain(matches), block_ids, instance_id)
        return (EVENT_HANDLE if outcome.processed else b"", outcome.ok)

    def cb_reorder_plan(self, key: CacheKey, keep_prefix: int, budget_ms: int) -> list[int]:
        """Always "keep the prompt as it is" (reordering is out of scope, §2)."""
        return []

    def end_session(self, request_id: str) -> None:
        """The default end_session, then release the request's stashed sparse locks and guard entries."""
        try:
            self._end_session(request_id)
        finally:
            self.lookups.end_session(request_id)
            self.retriever.forget(request_id)
