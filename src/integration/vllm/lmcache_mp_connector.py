"""Exists for vLLM's import path: vLLM's registered `LMCacheMPConnector` loads the class from this module.

A re-export only; the connector lives in `lmcache.adapters.vllm.connector`.
"""

from lmcache.adapters.vllm.connector import LMCacheMPConnector, LMCacheMPConnectorMetadata

__all__ = ("LMCacheMPConnector", "LMCacheMPConnectorMetadata")
