"""An in-test stand-in for a server's HTTP frontend, answering the shapes of wire-protocol.md §7.2."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import httpx

URL = "http://stub.test:8080"
GIB = 2**30

STATUS: dict[str, Any] = {
    "is_healthy": True,
    "engine_type": "MPCacheServer",
    "chunk_size": 256,
    "hash_algorithm": "blake3",
    "active_sessions": 3,
    "storage_manager": {
        "l1_manager": {
            "memory_total_bytes": GIB,
            "memory_used_bytes": 12 * 2**20,
            "memory_usage_ratio": 12 / 1024,
            "total_object_count": 48,
            "read_locked_object_count": 3,
            "read_lock_count": 5,
            "write_locked_object_count": 1,
        },
        "eviction_controller": {"eviction_policy": "LRU", "trigger_watermark": 0.8, "eviction_ratio": 0.2},
        "l2_adapters": [
            {
                "index": 0,
                "type": "fs",
                "is_healthy": True,
                "circuit_breaker": "closed",
                "usage": {
                    "used_bytes": 3 * 2**20,
                    "objects": 7,
                    "capacity_bytes": 6 * 2**20,
                    "usage_ratio": 0.5,
                },
            },
            {"type": "resp", "is_healthy": False},  # LMCache 0.5.6 shows only these two
        ],
    },
    "cache_context_meta": {
        "1000": {
            "model_name": "test-model",
            "world_size": 1,
            "kv_cache_layout": {
                "num_layers": 32,
                "num_blocks": 1024,
                "cache_size_per_token": 131072,
                "kernel_groups": [{"kernel_group_idx": 0, "num_layers": 32}],
            },
        }
    },
    "worker_liveness": {"1000": {"seconds_since_seen": 1.25, "has_pinged": True}},
}


@dataclass
class Stub:
    """A server's HTTP frontend as §7.2 describes it; `fail` forces an answer for a path."""

    healthy: bool = True
    status: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(STATUS)))
    quotas: dict[str, float] = field(default_factory=dict)
    usage_gb: dict[str, float] = field(default_factory=dict)
    fail: dict[str, httpx.Response] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        if path in self.fail:
            return self.fail[path]
        return self._route(request.method, path, body)

    def _route(self, method: str, path: str, body: Any) -> httpx.Response:
        if (method, path) == ("GET", "/healthcheck"):
            if self.healthy:
                return httpx.Response(200, json={"status": "healthy"})
            return httpx.Response(503, json={"status": "unhealthy", "reason": "engine not started"})
        if (method, path) == ("GET", "/status"):
            return httpx.Response(200, json=self.status)
        if (method, path) == ("POST", "/cache/clear"):
            tier = (body or {}).get("tier", "l1")
            if tier != "l1":
                return httpx.Response(400, json={"detail": f"tier: only 'l1' can be cleared, got {tier!r}"})
            return httpx.Response(200, json={"status": "ok", "cleared": {"tier": "l1"}})
        if (method, path) == ("GET", "/quota"):
            users = {
                s: {"limit_gb": v, "current_usage_gb": self.usage_gb.get(s, 0.0)}
                for s, v in self.quotas.items()
            }
            return httpx.Response(200, json={"users": users})
        if path.startswith("/quota/"):
            return self._quota(method, httpx.URL(path).path.removeprefix("/quota/"), body)
        return httpx.Response(404, json={"status_code": 404, "detail": "Not Found"})

    def _quota(self, method: str, salt: str, body: Any) -> httpx.Response:
        if method == "PUT":
            limit = (body or {}).get("limit_gb")
            if not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
                return httpx.Response(400, json={"error": "limit_gb must be a finite number >= 0"})
            self.quotas[salt] = float(limit)
            return httpx.Response(200, json={"cache_salt": salt, "limit_gb": float(limit), "status": "ok"})
        if method == "GET":
            return httpx.Response(
                200,
                json={
                    "cache_salt": salt,
                    "limit_gb": self.quotas.get(salt, 0.0),
                    "current_usage_gb": self.usage_gb.get(salt, 0.0),
                    "exists": salt in self.quotas,
                },
            )
        removed = self.quotas.pop(salt, None) is not None
        return httpx.Response(200, json={"cache_salt": salt, "status": "removed" if removed else "not_found"})
