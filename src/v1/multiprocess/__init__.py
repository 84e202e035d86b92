"""Exists for vLLM's import paths (`lmcache.v1.multiprocess.custom_types`); re-exports only."""
