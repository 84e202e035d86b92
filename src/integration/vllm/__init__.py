"""Re-export modules at the exact paths vLLM imports; the logic lives in `lmcache.adapters.vllm`."""
