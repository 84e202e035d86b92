"""Exists for vLLM's import path: vLLM's `lmcache_mp_connector` module imports these names from here.

Re-exports only; the adapters live in `lmcache.adapters.vllm`.
"""

from lmcache.adapters.vllm.scheduler_adapter import LMCacheMPSchedulerAdapter
from lmcache.adapters.vllm.transfer_ops import LoadStoreOp, ParallelStrategy
from lmcache.adapters.vllm.worker_adapter import LMCacheMPWorkerAdapter

__all__ = ("LMCacheMPSchedulerAdapter", "LMCacheMPWorkerAdapter", "LoadStoreOp", "ParallelStrategy")
