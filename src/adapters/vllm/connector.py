"""`LMCacheMPConnector`: vLLM's KV-connector v1 interface over `lmcache server`, for both roles.

This is the only module that imports vLLM; it translates vLLM's config and objects and delegates to the
scheduler half (`scheduler_planner`) or the worker adapter (`worker_adapter`). Select it with
`"kv_connector":"LMCacheMPConnector"` (vLLM's registry then imports it through
`lmcache.integration.vllm.lmcache_mp_connector`) or with
`"kv_connector_module_path":"lmcache.adapters.vllm.connector"`.

Loads are synchronous (a hit is loaded before the forward pass of the step that schedules the rest of the
prompt) and so are stores (they finish before the step returns), so no block outlives its request.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore[import-not-found]
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from lmcache.adapters.vllm.config import KVRole, parse_extra_config
from lmcache.adapters.vllm.kv_tensors import physical
from lmcache.adapters.vllm.logs import init_logger
from lmcache.adapters.vllm.scheduler_adapter import LMCacheMPSchedulerAdapter
from lmcache.adapters.vllm.scheduler_planner import SchedulerPlanner
from lmcache.adapters.vllm.transfer_ops import ConnectorPlan, ParallelStrategy
from lmcache.adapters.vllm.worker_adapter import LMCacheMPWorkerAdapter
from lmcache.domain.keys import validate_model_name

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

__all__ = ("LMCacheMPConnector", "LMCacheMPConnectorMetadata")

logger = init_logger("lmcache.vllm.connector")

# vLLM's KV cache layouts, named by the order of [layer, block, head, token, content], as LMCache hints.
_LAYOUT_HINTS = {"LBHNC": "HND", "BLHNC": "HND", "LBNHC": "NHD", "BLNHC": "NHD"}


class LMCacheMPConnectorMetadata(KVConnectorMetadata):  # type: ignore[misc]
    """One step's plan, shipped from the scheduler to the workers."""

    def __init__(self, plan: ConnectorPlan) -> None:
        super().__init__()
        self.plan = plan


def _layout_hints(vllm_config: Any, kv_caches: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`{"kv_layout": "HND"|"NHD"}` from vLLM's resolved layout, else from where the heads sit, else `{}`."""
    try:
        name = str(vllm_config.cache_config.get_resolved_kv_cache_layout().name)
    except Exception:
        name = ""
    if name in _LAYOUT_HINTS:
        return {"kv_layout": _LAYOUT_HINTS[name]}
    try:
        heads = int(vllm_config.model_config.get_num_kv_heads(vllm_config.parallel_config))
    except Exception:
        return {}
    block = int(vllm_config.cache_config.block_size)
    shape = tuple(physical(next(iter(kv_caches.values()))).shape)[-3:-1]
    if heads != block and shape == (heads, block):
        return {"kv_layout": "HND"}
    if heads != block and shape == (block, heads):
        return {"kv_layout": "NHD"}
    return {}


def _strategy(vllm_config: Any) -> ParallelStrategy:
    parallel = vllm_config.parallel_config
    return ParallelStrategy.build(
        bool(getattr(vllm_config.model_config, "use_mla", False)),
        int(parallel.world_size),
        int(parallel.rank),
        int(parallel.tensor_parallel_size),
        int(parallel.pipeline_parallel_size),
    )


class LMCacheMPConnector(KVConnectorBase_V1):  # type: ignore[misc]
    """vLLM KV connector for LMCache multiprocess mode.

    Extra config (`kv_connector_extra_config`): `lmcache.mp.host`, `lmcache.mp.port`, `lmcache.mp.mq_timeout`,
    `lmcache.mp.heartbeat_interval`, `lmcache.mp.mp_transfer_mode` (or `LMCACHE_MP_TRANSFER_MODE`) and
    `lmcache.mp.save_decode_cache`.
    """

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        transfer = vllm_config.kv_transfer_config
        self.config = parse_extra_config(transfer.kv_connector_extra_config, os.environ)
        for line in self.config.describe():
            logger.info("%s", line)
        self.kv_role = KVRole.parse(transfer.kv_role)
        model_name = validate_model_name(str(vllm_config.model_config.model))
        block_size = int(vllm_config.cache_config.block_size)
        strategy = _strategy(vllm_config)
        self._scheduler: SchedulerPlanner | None = None
        self._worker: LMCacheMPWorkerAdapter | None = None
        config = self.config
        link = (config.server_url, None, model_name, block_size, strategy, config.mq_timeout)
        if role == KVConnectorRole.SCHEDULER:
            adapter = LMCacheMPSchedulerAdapter(*link, config.heartbeat_interval)
            self._scheduler = SchedulerPlanner(
                adapter, self.kv_role, block_size, self.config.save_decode_cache
            )
            if getattr(transfer, "kv_load_failure_policy", "recompute") != "recompute":
                logger.warning(
                    "kv_load_failure_policy is %r: a KV load that fails (server cleared or restarted between "
                    'lookup and load) fails its request; set "kv_load_failure_policy":"recompute" in '
                    "--kv-transfer-config to recompute instead",
                    transfer.kv_load_failure_policy,
                )
        else:
            self._worker = LMCacheMPWorkerAdapter(*link, config.heartbeat_interval, config.mp_transfer_mode)

    def _plan(self) -> ConnectorPlan:
        metadata = self._get_connector_metadata()
        if not isinstance(metadata, LMCacheMPConnectorMetadata):
            raise TypeError(f"unexpected connector metadata {type(metadata).__name__}")
        return metadata.plan

    def _worker_side(self) -> LMCacheMPWorkerAdapter:
        if self._worker is None:
            raise RuntimeError("worker-side call on the scheduler's connector")
        return self._worker

    def _scheduler_side(self) -> SchedulerPlanner:
        if self._scheduler is None:
            raise RuntimeError("scheduler-side call on a worker's connector")
        return self._scheduler

    # ---------------------------------------------------------------- worker
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Register vLLM's KV tensors with the server."""
        logger.info("Registering kv caches!")
        self._worker_side().register_kv_caches(kv_caches, _layout_hints(self._vllm_config, kv_caches))

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        """Load this step's hits into their blocks before the forward pass."""
        if self.kv_role.can_load:
            self._worker_side().load(self._plan().loads)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads complete in `start_load_kv`."""

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        """Stores run whole-model in `wait_for_save`."""

    def wait_for_save(self) -> None:
        """Store the chunks that became full this step."""
        if self.kv_role.can_store:
            self._worker_side().store(self._plan().stores)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Nothing is asynchronous."""
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose load failed this step; vLLM recomputes them."""
        return self._worker.take_load_errors() if self._worker is not None else set()

    def shutdown(self) -> None:
        """Unregister and close."""
        if self._worker is not None:
            self._worker.shutdown()
        if self._scheduler is not None:
            self._scheduler.adapter.shutdown()

    # ------------------------------------------------------------- scheduler
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        """Tokens loadable from LMCache beyond vLLM's own hit; None while the lookup runs."""
        return self._scheduler_side().get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        """Plan the load into the allocated blocks."""
        self._scheduler_side().update_state_after_alloc(request, blocks.get_block_ids(), num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> LMCacheMPConnectorMetadata:
        """This step's loads and stores."""
        return LMCacheMPConnectorMetadata(self._scheduler_side().build_plan(scheduler_output))

    def update_connector_output(self, connector_output: Any) -> None:
        """Blocks whose load failed will be recomputed: store their chunks again."""
        self._scheduler_side().on_load_errors(getattr(connector_output, "invalid_block_ids", None))

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        """Release the request's lookup locks and end its session; blocks can be freed at once."""
        self._scheduler_side().request_finished(request)
        return False, None

    def take_events(self) -> Iterable[Any]:
        """No KV events from this connector."""
        return ()

    def reset_cache(self) -> bool | None:
        """A prefix-cache reset in vLLM also clears the server's unlocked L1 objects (`clear(False)`)."""
        return self._scheduler.adapter.reset_cache() if self._scheduler is not None else None

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: Any) -> str | None:
        """Any layout: the server reads the tensors' shapes and strides."""
        return None
