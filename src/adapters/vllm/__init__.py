"""vLLM KV-connector v1 adapters (scheduler and worker roles) speaking to `lmcache server`."""
