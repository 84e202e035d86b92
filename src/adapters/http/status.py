"""The `/status` document (wire-protocol.md §7.2: what `lmcache describe kvcache` reads) and health.

Field names follow LMCache 0.5.6 where a tool reads them (`is_healthy`, `engine_type`, `chunk_size`,
`active_sessions`, `storage_manager.l1_manager.*`, `storage_manager.eviction_controller.eviction_policy`,
`storage_manager.l2_adapters[].type/is_healthy`, `cache_context_meta.<id>.kv_cache_layout.*`). Ours beside
them, per L2 adapter: `eviction` (policy, usage as eviction counts it, capacity, evicted and refused
objects; null without `"eviction"`) and `serde` (stages, pool size, failures by kind; null without).
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import TYPE_CHECKING, Any

from lmcache.adapters.http.l2_ops import USAGE_TIMEOUT_S, usage_all
from lmcache.adapters.http.layout_view import worker_meta
from lmcache.adapters.storage._layers import find_layer

if TYPE_CHECKING:
    from lmcache.adapters.http.services import HttpServices

__all__ = ("build_status", "health_problem", "loops_view")

ENGINE_TYPE = "MPCacheServer"


def health_problem(services: HttpServices) -> str | None:
    """Why the server is unhealthy (the engine is not up, or a supervised loop is down), else None."""
    problem = services.engine_problem()
    if problem is not None:
        return problem
    down = sorted(name for name, h in services.supervisor.health().items() if not h.healthy)
    if down:
        return f"background loop(s) down: {', '.join(down)}"
    return None


def loops_view(services: HttpServices) -> dict[str, dict[str, Any]]:
    """Every supervised loop: alive (up), completed steps, failures and the last error."""
    return {
        name: {"alive": h.healthy, "runs": h.runs, "failures": h.failures, "last_error": h.last_error}
        for name, h in services.supervisor.health().items()
    }


def process_rss_bytes() -> int | None:
    """Resident set size of this process (Linux `/proc/self/statm`), None where unavailable."""
    try:
        with open("/proc/self/statm", "rb") as statm:  # noqa: PTH123 - one small read, no Path needed
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _l1(services: HttpServices) -> dict[str, Any]:
    l1 = services.engine.l1
    stats = l1.stats()
    locks = l1.lock_counts()
    memory = services.l1_memory
    return {
        "memory_backing": memory.kind if memory is not None else None,
        "memory_populated_bytes": memory.populated_bytes if memory is not None else None,
        "process_rss_bytes": process_rss_bytes(),
        "memory_total_bytes": stats.total_bytes,
        "memory_used_bytes": stats.used_bytes,
        "memory_usage_ratio": stats.used_bytes / stats.total_bytes if stats.total_bytes else 0.0,
        "total_object_count": l1.object_count,
        "retired_object_count": l1.retired_count,
        "retired_bytes": l1.retired_bytes,
        "free_bytes": stats.free_bytes,
        "largest_free_bytes": stats.largest_free,
        "fragmentation": stats.fragmentation,
        "write_ttl_seconds": l1.write_ttl_s,
        "read_ttl_seconds": l1.read_ttl_s,
        # Live locks: a client that dies holding them keeps them until their TTL (`lmcache bench server`
        # checks it left none).
        "read_locked_object_count": locks.read_locked_objects,
        "read_lock_count": locks.read_locks,
        "write_locked_object_count": locks.write_locked_objects,
    }


def _l2(services: HttpServices, usages: list[Any]) -> list[dict[str, Any]]:
    out = []
    for index, (adapter, kind, usage) in enumerate(
        zip(services.l2_adapters, services.l2_types, usages, strict=True)
    ):
        breaker = getattr(adapter, "breaker", None)
        state = getattr(breaker, "state", "closed")
        entry: dict[str, Any] = {"index": index, "type": kind, "is_healthy": state != "open"}
        entry["circuit_breaker"] = state
        counters = getattr(adapter, "counters", None)
        entry["corrupt_objects"] = getattr(counters, "corrupt", 0)
        entry["quarantined_objects"] = getattr(counters, "quarantined", 0)
        if usage is not None:
            cap = usage.capacity_bytes
            entry["usage"] = {
                "used_bytes": usage.used_bytes,
                "objects": usage.objects,
                "capacity_bytes": cap,
                "usage_ratio": usage.used_bytes / cap if cap else None,
            }
        else:
            entry["usage"] = None
        entry["eviction"] = _eviction(adapter)
        serde = find_layer(adapter, "serde_stats")
        entry["serde"] = serde.serde_stats() if serde is not None else None
        out.append(entry)
    return out


def _eviction(adapter: Any) -> dict[str, Any] | None:
    """Per-adapter eviction (`"eviction"` in its JSON): policy, usage as eviction counts it, evictions."""
    layer = find_layer(adapter, "eviction_stats")
    if layer is None:
        return None
    stats = layer.eviction_stats()
    return {
        "eviction_policy": stats.policy,
        "trigger_watermark": stats.trigger_watermark,
        "eviction_ratio": stats.eviction_ratio,
        "used_bytes": stats.used_bytes,
        "objects": stats.objects,
        "capacity_bytes": stats.capacity_bytes,
        "usage_ratio": stats.used_bytes / stats.capacity_bytes if stats.capacity_bytes else None,
        "evicted_objects": stats.evicted_objects,
        "evicted_bytes": stats.evicted_bytes,
        "rejected_objects": stats.rejected_objects,
    }


def _workers(services: HttpServices) -> tuple[dict[str, Any], dict[str, Any]]:
    workers = services.engine.workers
    now = workers.now()
    meta, liveness = {}, {}
    for worker in sorted(workers.workers(), key=lambda w: w.instance_id):
        meta[str(worker.instance_id)] = worker_meta(worker, services.settings.chunk_size)
        liveness[str(worker.instance_id)] = {
            "seconds_since_seen": round(now - worker.last_seen, 3),
            "has_pinged": worker.has_pinged,
            "reap_after_seconds": workers.reap_timeout_s if worker.has_pinged else workers.grace_s,
        }
    return meta, liveness


async def build_status(services: HttpServices) -> dict[str, Any]:
    """The whole document; L2 usage is asked of the adapters on the storage loop (bounded wait).

    The rest reads domain state under its locks, so it runs in a worker thread, off the event loop.
    """
    usages: list[Any] = [None] * len(services.l2_adapters)
    if services.l2_adapters:
        future = services.run_storage(usage_all(services.l2_adapters))
        try:
            usages = await asyncio.wait_for(asyncio.wrap_future(future), USAGE_TIMEOUT_S + 1.0)
        except TimeoutError:
            future.cancel()
    return await asyncio.to_thread(_document, services, usages)


def _document(services: HttpServices, usages: list[Any]) -> dict[str, Any]:
    engine, settings = services.engine, services.settings
    loops = services.supervisor.health()
    meta, liveness = _workers(services)
    store, prefetch, kv_events = engine.store_controller, engine.prefetch, engine.kv_events
    extras = dict(services.status_extras()) if services.status_extras is not None else {}
    return extras | {
        "is_healthy": health_problem(services) is None,
        "engine_type": ENGINE_TYPE,
        "instance_id": settings.instance_id,
        "version": services.version,
        "chunk_size": settings.chunk_size,
        "hash_algorithm": settings.hash_algorithm,
        "supported_transfer_mode": settings.supported_transfer_mode,
        "active_sessions": len(engine.sessions),
        "registered_gpu_ids": [int(i) for i in meta],
        "failed_registrations": {str(k): v for k, v in engine.workers.failed.items()},
        "storage_manager": {
            "l1_manager": _l1(services),
            "eviction_controller": {
                "eviction_policy": settings.eviction_policy,
                "trigger_watermark": services.eviction.trigger_watermark,
                "eviction_ratio": services.eviction.eviction_ratio,
                "thread_alive": loops["eviction"].healthy if "eviction" in loops else False,
            },
            "store_controller": {
                "policy": store.policy,
                "pending": store.pending,
                "stored": store.stored,
                "dropped": store.dropped,
                "queue_size": store.queue_size,
                "thread_alive": loops["l2_store"].healthy if "l2_store" in loops else False,
            },
            "prefetch_controller": {
                "policy": prefetch.policy,
                "max_in_flight": prefetch.max_in_flight,
                "num_adapters": len(services.l2_adapters),
            },
            "l2_adapters": _l2(services, usages),
        },
        "cache_context_meta": meta,
        "worker_liveness": liveness,
        "workers_reaped_total": engine.workers.reaped_total,
        "kv_events": {
            "enabled": kv_events.enabled,
            "incarnation": kv_events.incarnation,
            "log_depth": len(kv_events),
            "log_capacity": kv_events.capacity,
            "log_bytes": kv_events.nbytes,
            "log_max_bytes": kv_events.max_bytes,
            "next_seq": kv_events.next_seq,
        },
        "loops": loops_view(services),
        "python_gc": {
            "frozen_objects": gc.get_freeze_count(),
            "collections": [generation["collections"] for generation in gc.get_stats()],
        },
    }
