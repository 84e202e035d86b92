"""Litestar HTTP apps of the server: health, status, cache admin, quotas, L2 keys, metrics."""
