"""Minimal stand-ins for the vLLM objects the connector halves read, and a fake CPU engine around them.

The halves only read attributes by name, so these plain objects are all vLLM they need. The engine's KV
cache has vLLM's CPU layout: per layer `[blocks, kv_heads, block_size, 2 x head_size]` fp16, HND.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from lmcache.adapters.vllm.config import KVRole
from lmcache.adapters.vllm.scheduler_adapter import LMCacheMPSchedulerAdapter
from lmcache.adapters.vllm.scheduler_planner import SchedulerPlanner
from lmcache.adapters.vllm.worker_adapter import LMCacheMPWorkerAdapter

if TYPE_CHECKING:
    from lmcache.adapters.vllm.transfer_ops import ConnectorPlan

BLOCK = 32  # vLLM's CPU backend wants multiples of 32
CHUNK = 256  # the server's default --chunk-size
NUM_BLOCKS, HEADS, HEAD_SIZE, LAYERS = 64, 2, 64, 2
HINTS = {"kv_layout": "HND"}


@dataclass
class FakeRequest:
    """What the scheduler half reads from vLLM's `Request`."""

    request_id: str
    all_token_ids: list[int]
    cache_salt: str | None = None
    num_prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.all_token_ids)


class FakeBlocks:
    """vLLM's `KVCacheBlocks` as far as the connector uses it."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_block_ids(self) -> tuple[list[int], ...]:
        return (self.ids,)


def step_output(request_id: str, block_ids: list[int], computed: int, scheduled: int) -> Any:
    """A `SchedulerOutput` with one newly scheduled request."""
    new = SimpleNamespace(req_id=request_id, block_ids=(block_ids,), num_computed_tokens=computed)
    cached = SimpleNamespace(req_ids=[], new_block_ids=[], resumed_req_ids=set(), num_computed_tokens=[])
    return SimpleNamespace(
        scheduled_new_reqs=[new], scheduled_cached_reqs=cached, num_scheduled_tokens={request_id: scheduled}
    )


def layer_views(raw: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer `[blocks, heads, block_size, 2 x head_size]` views of one flat allocation."""
    per_layer = NUM_BLOCKS * HEADS * BLOCK * 2 * HEAD_SIZE
    return [
        raw[i * per_layer : (i + 1) * per_layer].view(NUM_BLOCKS, HEADS, BLOCK, 2 * HEAD_SIZE)
        for i in range(LAYERS)
    ]


class FakeVLLM:
    """One vLLM instance: the scheduler half and one worker, driven step by step like vLLM does.

    Args:
        url: The server.
        mode: `lmcache.mp.mp_transfer_mode`.
        seed: Seed of the KV contents.
        role: `kv_role`.
    """

    def __init__(
        self, url: str, mode: str, seed: int, role: str = "kv_both", heartbeat_s: float = 10.0
    ) -> None:
        self.scheduler = SchedulerPlanner(
            LMCacheMPSchedulerAdapter(
                url, model_name="tiny", vllm_block_size=BLOCK, mq_timeout=10.0, heartbeat_interval=heartbeat_s
            ),
            KVRole.parse(role),
            BLOCK,
            save_decode_cache=False,
        )
        self.worker = LMCacheMPWorkerAdapter(
            url,
            model_name="tiny",
            vllm_block_size=BLOCK,
            mq_timeout=10.0,
            heartbeat_interval=heartbeat_s,
            transfer_mode=mode,  # type: ignore[arg-type]
        )
        self.gen = torch.Generator().manual_seed(seed)
        raw = torch.zeros(LAYERS * NUM_BLOCKS * HEADS * BLOCK * 2 * HEAD_SIZE, dtype=torch.float16)
        # Like vLLM: the connector gets one set of views, the attention layers hold another.
        self.kv = {f"model.layers.{i}.self_attn.attn": v for i, v in enumerate(layer_views(raw))}
        self.attention_views = layer_views(raw)
        self.worker.register_kv_caches(self.kv, HINTS)

    def forward(self, blocks: list[int]) -> None:
        """Write fresh KV into `blocks` through the attention layers' views, as a forward pass does."""
        index = torch.tensor(blocks, dtype=torch.long)
        for view in self.attention_views:
            view[index] = torch.randn(view[index].shape, generator=self.gen).half()

    def matched(self, request: FakeRequest, local_tokens: int = 0) -> int:
        """`get_num_new_matched_tokens`, asked again while the lookup runs (vLLM re-asks every step)."""
        for _ in range(500):
            tokens, is_async = self.scheduler.get_num_new_matched_tokens(request, local_tokens)
            assert is_async is False
            if tokens is not None:
                return tokens
            time.sleep(0.01)
        raise AssertionError("lookup never finished")

    def schedule(self, request: FakeRequest, blocks: list[int], local_tokens: int = 0) -> ConnectorPlan:
        """One prefill step of the whole prompt: lookup, allocation, plan."""
        external = self.matched(request, local_tokens)
        self.scheduler.update_state_after_alloc(request, FakeBlocks(blocks).get_block_ids(), external)
        computed = local_tokens + external
        return self.scheduler.build_plan(
            step_output(request.request_id, blocks, computed, len(request.all_token_ids) - computed)
        )

    def run(self, plan: ConnectorPlan, computed_blocks: list[int]) -> set[int]:
        """The worker's part of a step: loads, the forward pass over `computed_blocks`, stores.

        Returns the blocks whose load failed.
        """
        self.worker.load(plan.loads)
        self.forward(computed_blocks)
        self.worker.store(plan.stores)
        return self.worker.take_load_errors()

    def blocks(self, ids: list[int]) -> list[torch.Tensor]:
        """Copies of these blocks of every layer, read through the attention layers' views."""
        index = torch.tensor(ids, dtype=torch.long)
        return [view[index].clone() for view in self.attention_views]

    def close(self) -> None:
        self.worker.shutdown()
        self.scheduler.adapter.shutdown()
