"""vLLM-facing re-export modules: vLLM imports these exact paths, the logic lives in `lmcache.adapters.vllm`."""
