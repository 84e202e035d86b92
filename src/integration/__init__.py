"""Import paths that vLLM expects from an installed `lmcache` package; thin re-exports only."""
