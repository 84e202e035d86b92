"""Exists for vLLM's import path: vLLM's `lmcache_mp_connector` module imports `init_logger` from here.

A re-export only; the function lives in `lmcache.adapters.vllm.logs`.
"""

from lmcache.adapters.vllm.logs import init_logger

__all__ = ("init_logger",)
