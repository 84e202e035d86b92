"""Exists for vLLM's import paths (`lmcache.v1.multiprocess...`); re-exports only."""
