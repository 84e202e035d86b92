"""Exists for vLLM's import path: vLLM's `lmcache_mp_connector` module imports `mla_enabled` from here.

A re-export only; the function lives in `lmcache.adapters.vllm.config`.
"""

from lmcache.adapters.vllm.config import mla_enabled

__all__ = ("mla_enabled",)
