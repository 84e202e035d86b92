"""Exists for vLLM's import path: vLLM's `lmcache_mp_connector` module imports the allocation record here.

vLLM asks for `RequestAllocationRecord` and falls back to `BlockAllocationRecord` when that name is absent.

A re-export only; the type lives in `lmcache.adapters.transport.wire_types`.
"""

from lmcache.adapters.transport.wire_types import BlockAllocationRecord

__all__ = ("BlockAllocationRecord",)
