"""The scheduler half of the connector: vLLM's scheduler callbacks turned into lookups and transfer plans.

It reads vLLM's objects by attribute name only (a `Request`, the `SchedulerOutput` and its new/cached
request data), so it runs, and is tested, without vLLM installed. Loads are synchronous: a hit is offered
with `load_kv_async=False`, vLLM allocates blocks and schedules the rest of the prompt in the same step,
and the workers load before that step's forward pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transport.wire_types import BlockAllocationRecord
from lmcache.adapters.vllm.tracking import RequestTracker
from lmcache.adapters.vllm.transfer_ops import ConnectorPlan, RequestOp
from lmcache.domain.keys import InvalidKeyError, validate_cache_salt

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lmcache.adapters.vllm.config import KVRole
    from lmcache.adapters.vllm.scheduler_adapter import LMCacheMPSchedulerAdapter

__all__ = ("SchedulerPlanner", "first_group")

logger = logging.getLogger("lmcache.vllm.scheduler")


def first_group(block_ids: Sequence[Sequence[int]] | None) -> list[int]:
    """The per-group block ids of vLLM reduced to the single group this connector supports."""
    if not block_ids:
        return []
    if len(block_ids) > 1:
        raise RuntimeError(
            "LMCacheMPConnector supports one KV cache group; "
            "start vLLM with --disable-hybrid-kv-cache-manager"
        )
    return list(block_ids[0])


def _cacheable(request: Any) -> tuple[bool, str]:
    """Whether a request's token ids identify its KV, and its salt."""
    salt = getattr(request, "cache_salt", None) or ""
    try:
        validate_cache_salt(salt)
    except InvalidKeyError as exc:
        logger.warning("Request %s is not cached: %s", request.request_id, exc)
        return False, salt
    if getattr(request, "prompt_embeds", None) is not None or getattr(request, "mm_features", None):
        return False, salt
    return getattr(request, "lora_request", None) is None, salt


class SchedulerPlanner:
    """Scheduler-side connector logic.

    Args:
        adapter: The scheduler's server adapter.
        role: The KV role (a consumer never stores, a producer never loads).
        block_size: vLLM's block size.
        save_decode_cache: Also store chunks holding generated tokens.
    """

    def __init__(
        self, adapter: LMCacheMPSchedulerAdapter, role: KVRole, block_size: int, save_decode_cache: bool
    ) -> None:
        self.adapter = adapter
        self.role = role
        self.block_size = block_size
        self.chunk_size = adapter.chunk_size
        self.save_decode_cache = save_decode_cache
        self.trackers: dict[str, RequestTracker] = {}

    def _tracker(self, request: Any) -> RequestTracker:
        tracker = self.trackers.get(request.request_id)
        if tracker is None:
            cacheable, salt = _cacheable(request)
            tracker = RequestTracker(
                request.request_id, request.all_token_ids, int(request.num_prompt_tokens), salt, cacheable
            )
            self.trackers[request.request_id] = tracker
        return tracker

    # ------------------------------------------------------- vLLM callbacks
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        """Tokens vLLM can load beyond its own `num_computed_tokens`; None while the lookup runs."""
        tracker = self._tracker(request)
        if tracker.allocated:  # preempted and back: a new lookup cycle
            self.adapter.finish_request(
                tracker.request_id, tracker.token_ids, tracker.take_locked_end(), tracker.cache_salt
            )
            tracker.start_cycle()
        if tracker.hit_tokens is not None:
            return tracker.record_hit(tracker.hit_tokens, num_computed_tokens), False
        if not (self.role.can_load and tracker.cacheable):
            return 0, False
        if num_computed_tokens >= tracker.lookup_end(self.chunk_size):
            tracker.record_hit(0, num_computed_tokens)
            return 0, False
        tracker.sent_ops = True
        self.adapter.maybe_submit_lookup_request(tracker.request_id, tracker.token_ids, tracker.cache_salt)
        hit = self.adapter.check_lookup_result(tracker.request_id)
        if hit is None:
            return None, False
        self.adapter.cleanup_lookup_result(tracker.request_id)
        load = tracker.record_hit(hit, num_computed_tokens)
        if hit:
            logger.info(
                "Request %s: LMCache hit %d tokens, vLLM has %d, loading %d",
                tracker.request_id,
                hit,
                num_computed_tokens,
                load,
            )
        return load, False

    def update_state_after_alloc(
        self, request: Any, block_ids: Sequence[Sequence[int]], num_external_tokens: int
    ) -> None:
        """Blocks are allocated: keep them, decide the load, free locks of chunks that will not be loaded."""
        tracker = self.trackers.get(request.request_id)
        if tracker is None:
            return
        tracker.set_blocks(first_group(block_ids))
        outcome = tracker.on_alloc(num_external_tokens, self.chunk_size, self.block_size)
        if outcome.free_end > 0:
            self.adapter.free_lookup_locks(
                tracker.token_ids, 0, outcome.free_end, tracker.request_id, tracker.cache_salt
            )

    def build_plan(self, scheduler_output: Any) -> ConnectorPlan:
        """This step's loads (decided at allocation) and stores (chunks that become full)."""
        plan = ConnectorPlan()
        allocations: list[BlockAllocationRecord] = []
        scheduled: dict[str, int] = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            tracker = self.trackers.get(new.req_id)
            if tracker is not None:
                tracker.set_blocks(first_group(new.block_ids))
                self._allocated(tracker, len(tracker.block_ids), allocations)
                self._plan(tracker, new.num_computed_tokens + scheduled.get(new.req_id, 0), plan)
        cached = scheduler_output.scheduled_cached_reqs
        resumed: set[str] = getattr(cached, "resumed_req_ids", set())
        for index, req_id in enumerate(cached.req_ids):
            tracker = self.trackers.get(req_id)
            if tracker is None:
                continue
            new_blocks = cached.new_block_ids[index]
            if req_id in resumed:
                tracker.set_blocks(first_group(new_blocks))
                self._allocated(tracker, len(tracker.block_ids), allocations)
            elif new_blocks is not None:
                added = first_group(new_blocks)
                tracker.add_blocks(added)
                self._allocated(tracker, len(added), allocations)
            self._plan(tracker, cached.num_computed_tokens[index] + scheduled.get(req_id, 0), plan)
        if allocations:
            self.adapter.report_block_allocations(allocations)
        return plan

    def _allocated(self, tracker: RequestTracker, count: int, out: list[BlockAllocationRecord]) -> None:
        """The last `count` blocks are new: record them with the tokens they hold (observability only)."""
        if count <= 0 or not tracker.cacheable:
            return
        total = len(tracker.block_ids)
        start, end = (total - count) * self.block_size, total * self.block_size
        out.append(
            BlockAllocationRecord(
                tracker.request_id, tracker.block_ids[total - count :], list(tracker.token_ids[start:end])
            )
        )

    def _plan(self, tracker: RequestTracker, computed_after_step: int, plan: ConnectorPlan) -> None:
        load = tracker.take_load()
        if load is not None:
            plan.loads.append(RequestOp(tracker.request_id, load, tracker.cache_salt))
        if not (self.role.can_store and tracker.cacheable):
            return
        store = tracker.next_store(
            computed_after_step, self.chunk_size, self.block_size, self.save_decode_cache
        )
        if store is not None:
            tracker.sent_ops = True
            plan.stores.append(RequestOp(tracker.request_id, store, tracker.cache_salt))

    def on_load_errors(self, invalid_block_ids: Iterable[int] | None) -> None:
        """Loads failed into these blocks: vLLM recomputes them, and we store those chunks again."""
        invalid = set(invalid_block_ids or ())
        if invalid:
            for tracker in self.trackers.values():
                tracker.forget_blocks_from(invalid, self.chunk_size, self.block_size)

    def request_finished(self, request: Any) -> None:
        """Release what the request's lookup still locks and end its server session."""
        tracker = self.trackers.pop(request.request_id, None)
        if tracker is not None and tracker.sent_ops:
            self.adapter.finish_request(
                tracker.request_id, tracker.token_ids, tracker.take_locked_end(), tracker.cache_salt
            )
