"""KV transfer between an engine's KV blocks and L1 extents (CPU shared memory; CUDA IPC on GPU hosts)."""
